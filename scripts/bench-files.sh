#!/usr/bin/env bash
# Upload and download throughput of files on loopback, with the peak RSS of the server and of
# the client, for each size given (default: 1 GiB and 4 GiB). Uses the release binaries; needs
# about 3 times the largest size free under $BENCH_DIR (default: a temp directory).
#
#   scripts/bench-files.sh            # 1 GiB and 4 GiB
#   scripts/bench-files.sh 256 1024   # sizes in MiB
#
# Prints one line per size: MiB, upload s and MB/s, download s and MB/s, peak RSS (MiB) of the
# uploading client, the downloading client and the server. docs/performance.md has a run.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')}"
cargo build --release -p chapar >/dev/null
chapar="$target/release/chapar"
sizes=("$@")
[ ${#sizes[@]} -eq 0 ] && sizes=(1024 4096)

work="$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/chapar-files-bench.XXXXXX")"
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$chapar" server --listen 127.0.0.1:0 --data "$work/server" >"$work/server.out" 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 100); do grep -q listening "$work/server.out" 2>/dev/null && break; sleep 0.1; done
url="$(awk '{print $NF}' "$work/server.out")"

"$chapar" --profile "$work/alice" register --server "$url" --username alice >/dev/null 2>&1
"$chapar" --profile "$work/bob" register --server "$url" --username bob >/dev/null 2>&1
"$chapar" --profile "$work/alice" send @bob "files are coming" >/dev/null
"$chapar" --profile "$work/bob" sync >/dev/null

now() { python3 -c 'import time; print(time.time())'; }
since() { python3 -c "import time; print(time.time() - $1)"; }
rate() { python3 -c "print($1 * 1.048576 / $2)"; }
# Peak RSS of a command in MiB, from GNU time's "Maximum resident set size" (KiB).
peak_mib() { awk -F': ' '/Maximum resident set size/ {printf "%.1f", $2 / 1024}' "$1"; }

printf '%8s %10s %10s %10s %10s %12s %12s %12s\n' MiB up_s up_MB/s down_s down_MB/s up_rss_MiB down_rss_MiB server_MiB
for mib in "${sizes[@]}"; do
  file="$work/file-$mib.bin"
  head -c "$((mib * 1024 * 1024))" /dev/urandom >"$file"
  sync
  start=$(now)
  id=$(/usr/bin/time -v -o "$work/up.time" "$chapar" --profile "$work/alice" send-file @bob "$file" 2>/dev/null)
  up=$(since "$start")
  "$chapar" --profile "$work/bob" sync >/dev/null
  out="$work/received-$mib.bin"
  start=$(now)
  /usr/bin/time -v -o "$work/down.time" "$chapar" --profile "$work/bob" download "$id" --out "$out" >/dev/null 2>&1
  down=$(since "$start")
  cmp -s "$file" "$out" || { echo "the downloaded file differs" >&2; exit 1; }
  server_rss=$(awk '/VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$server_pid/status")
  printf '%8s %10.2f %10.1f %10.2f %10.1f %12s %12s %12s\n' "$mib" "$up" \
    "$(rate "$mib" "$up")" "$down" "$(rate "$mib" "$down")" \
    "$(peak_mib "$work/up.time")" "$(peak_mib "$work/down.time")" "$server_rss"
  rm -f "$file" "$out"
done
