#!/usr/bin/env bash
# Make sure this machine can run tenantctl's embedded database and its tests: a PostgreSQL server
# (initdb, pg_ctl, postgres, psql) and openssl (the TLS test makes its own certificates).
# Installs Debian's packages when something is missing; does nothing when all is there.
set -euo pipefail

have_server() {
  if [ -n "${TENANTCTL_PG_BINDIR:-}" ] && [ -x "$TENANTCTL_PG_BINDIR/initdb" ]; then return 0; fi
  command -v initdb >/dev/null 2>&1 && return 0
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}

missing=()
have_server || missing+=(postgresql)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v psql >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/psql >/dev/null 2>&1 || missing+=(postgresql-client)

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing ${missing[*]}; install them (e.g. sudo apt-get install ${missing[*]}) and run again" >&2
    exit 2
  fi
  echo "setup: installing ${missing[*]} from Debian's packages" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# As root, the server runs as the unprivileged user `postgres` (Postgres refuses root).
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
  echo "setup: creating the system user postgres to run the server" >&2
  useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
echo "setup: ok (PostgreSQL server: ${TENANTCTL_PG_BINDIR:-${bindir:-$(dirname "$(command -v initdb)")}})" >&2
