#!/usr/bin/env bash
# Seeding benchmark: `tenantctl tenant create --members N` (set-based INSERTs through RLS, as the
# tenant) against psql's `\copy` of the same N member rows as a superuser (no RLS), measured in
# the same run, on a fresh database `tenantctl_bench` of the embedded local cluster.
#
#   ./scripts/bench-seed.sh [N]        # N defaults to 1000000
#
# The \copy input is tenant create's own output, exported to CSV beforehand (not timed) and
# pointed at a second gym that has the same coaches, so both sides write the same rows into the
# same table with the same indexes, foreign keys and constraints. tenant create is timed end to
# end (connect, generate the fake data, insert, commit, isolation probe); \copy is timed around
# psql. Results are printed; docs/performance.md records a run.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
DB=tenantctl_bench

cargo build --release -q
T=$PWD/target/release/tenantctl
unset DATABASE_URL
PSQL=$(command -v psql || ls /usr/lib/postgresql/*/bin/psql | sort -V | tail -n 1)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

$T dev up >/dev/null 2>&1
ADMIN_URL=$($T dev url --show-password)
URL=${ADMIN_URL%/*}/$DB
psql_() { "$PSQL" -X -q -v ON_ERROR_STOP=1 "$@"; }

psql_ "$ADMIN_URL" -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
$T --database-url "$URL" migrate 2>/dev/null

now() { date +%s.%N; }
echo "PostgreSQL: $(psql_ "$URL" -Atc 'SHOW server_version'), $(nproc) cores, fsync=$(psql_ "$URL" -Atc 'SHOW fsync')"
echo "rows: $N members (+ 20 coaches)"

# 1. tenant create, as the app role in the tenant's context.
psql_ "$URL" -c CHECKPOINT
t0=$(now)
$T --database-url "$URL" --format json tenant create bench-create --name "Bench create" \
  --coaches 20 --members "$N" --seed 1 >"$work/create.json"
t1=$(now)
seed_s=$(sed -n 's/.*"seed_seconds": \([0-9.]*\).*/\1/p' "$work/create.json")

# 2. The same rows for \copy: a second gym with the same coaches; members re-pointed at them.
gym_a=$(sed -n 's/.*"id": "\([0-9a-f-]*\)".*/\1/p' "$work/create.json" | head -n 1)
gym_b=$(psql_ "$URL" -Atc "INSERT INTO gyms (slug, name) VALUES ('bench-copy', 'Bench copy') RETURNING id")
psql_ "$URL" -c "INSERT INTO coaches (gym_id, full_name, email, phone, specialties, hired_on, active)
                 SELECT '$gym_b', full_name, email, phone, specialties, hired_on, active FROM coaches WHERE gym_id = '$gym_a'"
psql_ "$URL" -c "\\copy (SELECT '$gym_b'::uuid, m.full_name, m.email, m.phone, m.date_of_birth, m.joined_on, m.status, cb.id
                         FROM members m
                         LEFT JOIN coaches ca ON ca.id = m.home_coach_id
                         LEFT JOIN coaches cb ON cb.gym_id = '$gym_b' AND cb.email = ca.email
                         WHERE m.gym_id = '$gym_a') TO '$work/members.csv' WITH (FORMAT csv)"
psql_ "$URL" -c CHECKPOINT
t2=$(now)
psql_ "$URL" -c "\\copy members (gym_id, full_name, email, phone, date_of_birth, joined_on, status, home_coach_id) FROM '$work/members.csv' WITH (FORMAT csv)"
t3=$(now)

# 3. tenant create again, now into the fuller table as \copy was, so neither side gains from order.
psql_ "$URL" -c CHECKPOINT
t4=$(now)
$T --database-url "$URL" --format json tenant create bench-create-2 --name "Bench create 2" \
  --coaches 20 --members "$N" --seed 2 >"$work/create2.json"
t5=$(now)
seed2_s=$(sed -n 's/.*"seed_seconds": \([0-9.]*\).*/\1/p' "$work/create2.json")

counts=$(psql_ "$URL" -Atc "SELECT string_agg(g.slug || '=' || (SELECT count(*) FROM members m WHERE m.gym_id = g.id), ' ' ORDER BY g.slug) FROM gyms g")
psql_ "$ADMIN_URL" -c "DROP DATABASE $DB WITH (FORCE)"

awk -v n="$N" -v c="$(echo "$t1 - $t0" | bc)" -v s="$seed_s" -v p="$(echo "$t3 - $t2" | bc)" \
    -v c2="$(echo "$t5 - $t4" | bc)" -v s2="$seed2_s" -v counts="$counts" 'BEGIN {
  printf "members per gym: %s\n", counts
  printf "1. tenant create (whole command):  %7.2f s  %9.0f rows/s  (seeding phase %.2f s, %.0f rows/s)\n", c, n / c, s, n / s
  printf "2. psql \\copy as superuser:        %7.2f s  %9.0f rows/s\n", p, n / p
  printf "3. tenant create (whole command):  %7.2f s  %9.0f rows/s  (seeding phase %.2f s, %.0f rows/s)\n", c2, n / c2, s2, n / s2
  printf "tenant create throughput / \\copy throughput (whole command): run 1 %.0f%%, run 3 %.0f%%\n", 100 * p / c, 100 * p / c2
}'
