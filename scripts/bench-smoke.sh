#!/usr/bin/env bash
# Smoke run of every benchmark (a few seconds each) so they keep compiling and working.
# Figures from this run mean nothing; docs/performance.md has the real runs and their commands.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
cargo build -p chapar -p chapar-bench
bench="$target/debug/chapar-bench"
check() { python3 -c 'import json,sys; d=json.load(sys.stdin); assert "messages_per_sec" in d and "server_rss_bytes" in d, d; print("  ok:", d["scenario"], d["mode"])'; }

"$bench" pairs --server-only --duration 1 --rate 400 --pairs 2 --json | check
"$bench" pairs --duration 1 --rate 100 --pairs 2 --json | check
if command -v nats-server >/dev/null; then
  "$bench" pairs --server-only --duration 1 --rate 400 --pairs 2 --nats --json | check
else
  echo "  skipped the NATS anchor: nats-server is not installed"
fi
"$bench" fanout --server-only --sizes 10,50 --messages 3 --burst 5 --json | check
"$bench" fanout --sizes 5 --messages 3 --burst 5 --json | check
"$bench" idle --server-only --connections 200 --devices 10 --json | check
"$bench" catchup --server-only --messages 2000 --json | check
"$bench" catchup --messages 300 --json | check
"$bench" history --messages 40 --chats 2 --json | check
"$bench" soak --intervals 2 --interval-secs 2 --pairs 2 --rate 50 --churn-per-sec 5 --file-bytes 100000 --files-per-sec 2 --json | check
CHAPAR_BENCH_MAX_MEMBERS=100 cargo bench -p chapar-bench --bench micro --profile dev -- --sample-count 1 --sample-size 1 >/dev/null
echo "  ok: micro-benchmarks"
