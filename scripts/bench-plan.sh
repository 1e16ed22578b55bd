#!/usr/bin/env bash
# Speed of `tenantctl plan` and `tenantctl generate` on a synthetic 200-table policy set (the
# shipped gyms/coaches/members plus 197 generated tables, each with per-tenant uniques, indexes,
# a reference to the table before it, a policy and grants), process start included.
#
#   scripts/bench-plan.sh [TABLES]      # TABLES defaults to 200; needs hyperfine (apt-get install hyperfine)
#
# `generate --offline` (no test-apply: that needs a server) runs against a fresh migrations/ each time (hyperfine --prepare), so every run
# writes the whole first migration; then the same after a one-column change, with V1 and its
# snapshot in place. Target: under 20 ms each. docs/performance.md keeps a run.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200}
cargo build --release -q
T=$PWD/target/release/tenantctl
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

$T init "$work/p" >/dev/null 2>&1
extra=$((N - 3))
for i in $(seq 1 "$extra"); do
    if [ "$i" = 1 ]; then parent=members; else parent="t$((i - 1))"; fi
    cat >"$work/p/policies/t$i.toml" <<TOML
[tables.t$i]
comment = "synthetic table $i"
columns = [
  { name = "id", type = "uuid", default = "gen_random_uuid()" },
  { name = "gym_id", type = "uuid" },
  { name = "code", type = "text", check = "length(code) BETWEEN 1 AND 40" },
  { name = "title", type = "text" },
  { name = "amount", type = "integer", default = "0", check = "amount >= 0" },
  { name = "state", type = "text", default = "'open'", check = "state IN ('open', 'closed')" },
  { name = "parent_id", type = "uuid", nullable = true },
  { name = "notes", type = "text", nullable = true },
  { name = "created_at", type = "timestamptz", default = "now()" },
]
unique = [["code"]]
references = [{ column = "parent_id", table = "$parent" }]
indexes = [{ columns = ["title"] }, { columns = ["state"] }, { columns = ["parent_id"] }]
grants.gym_app = ["select", "insert", "update", "delete"]
grants.platform_admin = ["select", "insert", "update", "delete"]
TOML
done
cd "$work/p"
echo "tables: $(ls policies/*.toml | wc -l) files, $N tables; plan prints $($T plan | wc -l) lines"
# Median and minimum of each command (hyperfine's mean is pulled up by the odd slow run).
report() {
    python3 -c 'import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    print("  %-40s median %5.1f ms  min %5.1f ms  max %5.1f ms  (%d runs)" % (r["command"].replace(sys.argv[2], "tenantctl"), r["median"] * 1e3, r["min"] * 1e3, r["max"] * 1e3, len(r["times"])))' "$1" "$T"
}
echo "shipped 3-table project, for reference:"
hyperfine -N --warmup 3 --runs 30 --style none --export-json "$work/ref.json" "$T --config $OLDPWD/tenantctl.toml plan" >/dev/null
report "$work/ref.json"
echo "$N tables (target: under 20 ms each):"
hyperfine -N --warmup 5 --runs 60 --style none --export-json "$work/big.json" \
    --prepare "rm -rf migrations && mkdir migrations" "$T plan" "$T generate --offline" >/dev/null
report "$work/big.json"
# The day-to-day case: the first migration and its snapshot exist, one table gains a column;
# `generate` reads the 200-table snapshot, diffs, lints and writes V2 (reset before each run;
# the new column's grants widen what the roles reach, which $CI would refuse without the flag).
$T generate --offline >/dev/null 2>&1
cp -r migrations "$work/initial"
sed -i 's/^  { name = "notes", type = "text", nullable = true },$/&\n  { name = "extra", type = "text", nullable = true },/' policies/t100.toml
echo "$N tables, one column added (V1 and its snapshot exist):"
hyperfine -N --warmup 5 --runs 60 --style none --export-json "$work/change.json" \
    --prepare "rm -rf migrations && cp -r $work/initial migrations" "$T plan" \
    "$T generate --offline --allow-widening" >/dev/null
report "$work/change.json"
echo "load average when done: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"
