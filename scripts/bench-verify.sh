#!/usr/bin/env bash
# Benchmark `tenantctl verify` (full probes of every tenant) against one admin full scan of the
# same tables, on 1,000 gyms / 50,000 coaches / 1,000,000 members, then peak memory at 10,000
# gyms (same row counts). Prints what it measured; docs/performance.md keeps a run's output.
#
# Usage: scripts/bench-verify.sh [WORKDIR]   (default: a new temp dir; removed at the end)
#        BENCH_SKIP_10K=1 scripts/bench-verify.sh ...   (1,000 gyms only, while iterating)
#        BENCH_RUNS=N scripts/bench-verify.sh ...       (runs per measurement, default 5; medians)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d /tmp/tenantctl-bench.XXXXXX)}
mkdir -p "$work" && chmod 755 "$work"
bin="$repo/target/release/tenantctl"

echo "== building (release)"
cargo build --release --quiet --manifest-path "$repo/Cargo.toml"

psql_bin=$(command -v psql || ls /usr/lib/postgresql/*/bin/psql | tail -1)
echo "== starting a throwaway cluster in $work/cluster"
"$bin" dev up --dir "$work/cluster" >/dev/null
trap '"$bin" dev down --dir "$work/cluster" >/dev/null 2>&1 || true; [ -z "${1:-}" ] && rm -rf "$work"' EXIT
base_url=$("$bin" --format json dev url --show-password --dir "$work/cluster" | sed -n 's/.*"url": "\(.*\)".*/\1/p')
server_url=${base_url%/*}

mkdir -p "$work/project"
cp -r "$repo/policies" "$repo/migrations" "$repo/tenantctl.toml" "$work/project/"

setup() { # name gyms coaches_per_gym members_per_gym
    local db=$1 url="$server_url/$1"
    "$psql_bin" -X -q "$base_url" -c "CREATE DATABASE $db" >/dev/null
    (cd "$work/project" && "$bin" --database-url "$url" migrate >/dev/null 2>&1)
    "$psql_bin" -X -q -v ON_ERROR_STOP=1 "$url" <<SQL
INSERT INTO gyms (id, slug, name) SELECT gen_random_uuid(), 'gym-' || i, 'Gym ' || i FROM generate_series(1, $2) i;
INSERT INTO coaches (gym_id, full_name, email)
  SELECT g.id, 'Coach ' || c, 'c' || c || '@' || g.slug FROM gyms g, generate_series(1, $3) c;
INSERT INTO members (gym_id, full_name, email)
  SELECT g.id, 'Member ' || m, 'm' || m || '@' || g.slug FROM gyms g, generate_series(1, $4) m;
SQL
    settle "$url" "$1"
}

# Bring the tables to the steady state autovacuum keeps a live database in: statistics current
# and the visibility map set, so that a per-tenant count can be an index-only scan. A VACUUM
# right after the load can leave the map unset (a concurrent autovacuum ANALYZE's snapshot
# predates the last insert, so its rows are not yet visible to all); VACUUM again until every
# page is all-visible (at most 10 passes).
settle() { # url name
    local url=$1 pass left
    for pass in 1 2 3 4 5 6 7 8 9 10; do
        "$psql_bin" -X -q -v ON_ERROR_STOP=1 "$url" -c "VACUUM (ANALYZE) gyms, coaches, members" >/dev/null
        left=$("$psql_bin" -X -q -t -A "$url" -c "SELECT count(*) FROM pg_class WHERE relname IN ('gyms', 'coaches', 'members') AND relallvisible < relpages")
        if [ "$left" = 0 ]; then echo "$2: visibility map set after $pass VACUUM pass(es)"; return; fi
        sleep 1
    done
    echo "$2: visibility map still not set after $pass VACUUM passes"
}

RUNS=${BENCH_RUNS:-5}

# The median of a list of numbers (one per line).
median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

# One admin full scan of the tenant tables, in milliseconds: the median of $RUNS runs after one
# that warms the cache (each run is the three GROUP BYs, summed).
admin_scan_ms() {
    local url="$server_url/$1" out run
    for run in $(seq 0 "$RUNS"); do
        out=$("$psql_bin" -X -q "$url" <<SQL
BEGIN; SET LOCAL ROLE platform_admin;
\timing on
SELECT id, count(*) FROM gyms GROUP BY id \g /dev/null
SELECT gym_id, count(*) FROM coaches GROUP BY gym_id \g /dev/null
SELECT gym_id, count(*) FROM members GROUP BY gym_id \g /dev/null
ROLLBACK;
SQL
)
        [ "$run" = 0 ] && continue
        echo "$out" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | awk '{s += $1} END {printf "%.1f\n", s}'
    done | tee "$work/scan-$1.txt" | median
}

# verify with full probes, $RUNS times: prints "median_seconds min max max_rss_kb exit_codes".
run_verify() { # db
    local url="$server_url/$1" t0 t1 code run codes=""
    : >"$work/verify-times-$1.txt"; : >"$work/verify-rss-$1.txt"
    for run in $(seq 1 "$RUNS"); do
        code=0
        t0=$(date +%s.%N)
        /usr/bin/time -v -o "$work/time-$1.txt" "$bin" --database-url "$url" --format json verify \
            >"$work/verify-$1.json" 2>"$work/verify-$1.err" || code=$?
        t1=$(date +%s.%N)
        echo "$t1 - $t0" | bc >>"$work/verify-times-$1.txt"
        sed -n 's/.*Maximum resident set size (kbytes): //p' "$work/time-$1.txt" >>"$work/verify-rss-$1.txt"
        codes="$codes$code"
    done
    echo "$(median <"$work/verify-times-$1.txt") $(sort -n "$work/verify-times-$1.txt" | head -1) $(sort -n "$work/verify-times-$1.txt" | tail -1) $(sort -n "$work/verify-rss-$1.txt" | tail -1) $codes"
}

echo "== generating data (set-based, as superuser)"
setup bench1k 1000 50 1000
[ -z "${BENCH_SKIP_10K:-}" ] && setup bench10k 10000 5 100
"$psql_bin" -X -q -t "$server_url/bench1k" -c "SELECT 'bench1k: ' || (SELECT count(*) FROM gyms) || ' gyms, ' || (SELECT count(*) FROM coaches) || ' coaches, ' || (SELECT count(*) FROM members) || ' members'"
[ -z "${BENCH_SKIP_10K:-}" ] && "$psql_bin" -X -q -t "$server_url/bench10k" -c "SELECT 'bench10k: ' || (SELECT count(*) FROM gyms) || ' gyms, ' || (SELECT count(*) FROM coaches) || ' coaches, ' || (SELECT count(*) FROM members) || ' members'"

# Whether VACUUM set the visibility map decides between index-only and heap access for every
# per-tenant count (see settle above).
dbs="bench1k"; [ -z "${BENCH_SKIP_10K:-}" ] && dbs="bench1k bench10k"
for db in $dbs; do
    "$psql_bin" -X -q -t "$server_url/$db" -c "SELECT '$db visibility map: ' || string_agg(relname || ' ' || relallvisible || '/' || relpages || ' pages all-visible', ', ' ORDER BY relname) FROM pg_class WHERE relname IN ('gyms', 'coaches', 'members')"
done

echo "== measuring ($RUNS runs each; medians)"
scan=$(admin_scan_ms bench1k)
read -r secs lo hi rss codes <<<"$(run_verify bench1k)"
stats=$(grep -o '"tenants_probed": [0-9][0-9]*\|"checks": [0-9][0-9]*\|"errors": [0-9][0-9]*' "$work/verify-bench1k.json" | tr '\n' ' ')
echo
echo "admin full scan (gyms+coaches+members GROUP BY tenant), 1,000 gyms: ${scan} ms (runs: $(paste -sd' ' "$work/scan-bench1k.txt"))"
echo "verify, 1,000 gyms, full probes:  ${secs} s median (min ${lo}, max ${hi}), exit codes ${codes}, peak RSS ${rss} kB; ${stats}"
echo "ratio verify / admin scan:        $(echo "scale=2; $secs * 1000 / $scan" | bc)x   (target <= 5x)"
[ -n "${BENCH_SKIP_10K:-}" ] && exit 0
read -r secs10 lo10 hi10 rss10 codes10 <<<"$(run_verify bench10k)"
scan10=$(admin_scan_ms bench10k)
stats10=$(grep -o '"tenants_probed": [0-9][0-9]*\|"checks": [0-9][0-9]*\|"errors": [0-9][0-9]*' "$work/verify-bench10k.json" | tr '\n' ' ')

echo "admin full scan, 10,000 gyms:     ${scan10} ms (runs: $(paste -sd' ' "$work/scan-bench10k.txt"))"
echo "verify, 10,000 gyms, full probes: ${secs10} s median (min ${lo10}, max ${hi10}), exit codes ${codes10}, peak RSS ${rss10} kB; ${stats10}"
echo "ratio verify / admin scan:        $(echo "scale=2; $secs10 * 1000 / $scan10" | bc)x"
echo "peak RSS 10,000 / 1,000 gyms:     $(echo "scale=2; $rss10 / $rss" | bc)x   (target <= 1.5x; the largest of the runs each)"
