#!/usr/bin/env bash
# Citus 13.2.2 for the Citus target's tests (called by `scripts/setup.sh --citus`).
#
# Builds vendor/citus/citus-13.2.2.tar.gz (with vendor/citus/*.patch) against Debian's PostgreSQL 15
# in a cache directory outside the clone and installs it into that server's library and extension
# directories. Does nothing when the installed citus.so is already 13.2.2. Prints one line:
# `citus <version> <pkglibdir>`.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
version=13.2.2
major=15
pgbin="/usr/lib/postgresql/$major/bin"
cache="${TENANTCTL_CITUS_CACHE:-/var/cache/tenantctl/citus-$version}"

installed() {
  [ -x "$pgbin/pg_config" ] || return 1
  local so
  so="$("$pgbin/pg_config" --pkglibdir)/citus.so"
  [ -f "$so" ] && grep -aq "Citus $version" "$so"
}

if ! installed; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: Citus $version is not installed in PostgreSQL $major; run this as root to build it" >&2
    exit 2
  fi
  server=$(dpkg-query -W -f='${Version}' "postgresql-$major" 2>/dev/null || true)
  if [ -z "$server" ]; then
    echo "setup: Citus needs Debian's postgresql-$major; run scripts/setup.sh first" >&2
    exit 2
  fi
  # The headers must be those of the installed server (Citus is built against them).
  deps=("postgresql-server-dev-$major=$server" liblz4-dev libzstd-dev libkrb5-dev libssl-dev make gcc patch)
  echo "setup: installing Citus's build dependencies (${deps[*]})" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${deps[@]}" >/dev/null
  echo "setup: building Citus $version in $cache (about 90 s on 2 cores)" >&2
  rm -rf "$cache"
  mkdir -p "$cache"
  tar xzf "$here/vendor/citus/citus-$version.tar.gz" -C "$cache"
  for p in "$here"/vendor/citus/*.patch; do
    patch -d "$cache" -p1 -s <"$p"
  done
  (
    cd "$cache"
    ./configure --without-libcurl PG_CONFIG="$pgbin/pg_config" >build.log 2>&1
    # No LLVM bitcode for JIT inlining: it doubles the build time and the tests do not need it.
    make -j"$(nproc)" with_llvm=no >>build.log 2>&1
    make install with_llvm=no >>build.log 2>&1
  ) || {
    echo "setup: building Citus failed; the last lines of $cache/build.log:" >&2
    tail -n 30 "$cache/build.log" >&2
    exit 2
  }
  installed || { echo "setup: Citus built but $("$pgbin/pg_config" --pkglibdir)/citus.so is not $version" >&2; exit 2; }
fi
echo "citus $version $("$pgbin/pg_config" --pkglibdir)"
