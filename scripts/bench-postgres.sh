#!/usr/bin/env bash
# One node on SQLite against one node on PostgreSQL, alternating, each run on a fresh
# database: `chapar-bench pairs --server-only` at a fixed offered rate, the same for both.
# Uses the release binaries, `psql` from Debian's postgresql-client, and the server at
# $CHAPAR_BENCH_POSTGRES (default postgres://postgres@127.0.0.1:5432/postgres, trust auth).
#
#   scripts/bench-postgres.sh                 # 3 runs each at 2000 msg/s for 5 s
#   scripts/bench-postgres.sh 5 4000 10       # runs, rate, seconds
#
# Prints one JSON line per run (backend, messages/s, p50, p99, server CPU) and then the
# medians per backend. docs/scaling.md has a run.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')}"
cargo build --release -p chapar -p chapar-bench >/dev/null
bench="$target/release/chapar-bench"
runs="${1:-3}" rate="${2:-2000}" secs="${3:-5}"
admin="${CHAPAR_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432/postgres}"
base="${admin%/*}"
results="$(mktemp)"
trap 'rm -f "$results"' EXIT

run() { # run BACKEND: one measured run, one JSON line
  local extra=() db=""
  if [ "$1" = postgres ]; then
    db="chapar_bench_$$_$RANDOM"
    psql -q "$admin" -c "CREATE DATABASE $db"
    extra=(env "CHAPAR_DATABASE=$base/$db")
  fi
  "${extra[@]}" "$bench" pairs --server-only --rate "$rate" --duration "$secs" --json |
    python3 -c '
import json, sys
d = json.load(sys.stdin)
print(json.dumps({"backend": sys.argv[1], "messages_per_sec": round(d["messages_per_sec"]),
  "p50_ms": d["p50_ms"], "p99_ms": d["p99_ms"],
  "server_cpu_percent": d.get("server_cpu_percent")}))' "$1" | tee -a "$results"
  if [ -n "$db" ]; then psql -q "$admin" -c "DROP DATABASE $db WITH (FORCE)"; fi
}

for _ in $(seq "$runs"); do
  run sqlite
  run postgres
done
python3 - "$results" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for backend in ("sqlite", "postgres"):
    mine = [r for r in rows if r["backend"] == backend]
    med = lambda k: statistics.median(r[k] for r in mine if r[k] is not None)
    print(f"median {backend}: {med('messages_per_sec')} msg/s, p50 {med('p50_ms'):.2f} ms, "
          f"p99 {med('p99_ms'):.2f} ms, server CPU {med('server_cpu_percent'):.0f}%")
EOF
