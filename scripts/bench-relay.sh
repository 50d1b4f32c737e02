#!/usr/bin/env bash
# File throughput over plain HTTP, over TLS, and over TLS through a `chapar relay`, on
# loopback, with the relay's CPU time per megabit it carried. Uses the release binaries and
# Debian's openssl (for a self-signed certificate).
#
#   scripts/bench-relay.sh          # a 256 MiB file
#   scripts/bench-relay.sh 1024     # size in MiB
#
# Prints one line per path: upload and download seconds and MB/s; for the relay, its CPU
# seconds (user + system, from /proc) and CPU milliseconds per Mbit relayed (both ways).
# docs/performance.md has a run.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')}"
cargo build --release -p chapar >/dev/null
chapar="$target/release/chapar"
mib="${1:-256}"

work="$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/chapar-relay-bench.XXXXXX")"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -keyout "$work/key.pem" -out "$work/cert.pem" -subj /CN=localhost \
  -addext subjectAltName=IP:127.0.0.1 2>/dev/null

# wait_line FILE PATTERN: the last field of the first line of FILE matching PATTERN.
wait_line() {
  for _ in $(seq 200); do
    line=$(grep -m1 "$2" "$1" 2>/dev/null || true)
    [ -n "$line" ] && { echo "${line##* }"; return; }
    sleep 0.05
  done
  echo "no '$2' in $1" >&2; exit 1
}

"$chapar" server --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --data "$work/plain" \
  >"$work/plain.out" 2>/dev/null &
pids+=($!)
"$chapar" server --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --data "$work/tls" \
  --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" >"$work/tls.out" 2>/dev/null &
pids+=($!)
plain=$(wait_line "$work/plain.out" listening)
tls=$(wait_line "$work/tls.out" listening)
"$chapar" relay --server "$tls" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
  >"$work/relay.out" 2>/dev/null &
relay_pid=$!
pids+=($relay_pid)
relayed=$(wait_line "$work/relay.out" "relay link")

now() { python3 -c 'import time; print(time.time())'; }
since() { python3 -c "import time; print(time.time() - $1)"; }
rate() { python3 -c "print($1 * 1.048576 / $2)"; }
cpu_s() { awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$1/stat"; }

file="$work/file.bin"
head -c "$((mib * 1024 * 1024))" /dev/urandom >"$file"
printf '%-12s %8s %10s %10s %10s %10s %12s\n' path MiB up_s up_MB/s down_s down_MB/s relay_cpu
for path in plain tls relay; do
  case $path in
    plain) url=$plain ;;
    tls) url=$tls ;;
    relay) url=$relayed ;;
  esac
  "$chapar" --profile "$work/$path-alice" register --server "$url" --username "${path}_alice" >/dev/null 2>&1
  "$chapar" --profile "$work/$path-bob" register --server "$url" --username "${path}_bob" >/dev/null 2>&1
  "$chapar" --profile "$work/$path-alice" send "@${path}_bob" hello >/dev/null
  "$chapar" --profile "$work/$path-bob" sync >/dev/null
  cpu_before=$(cpu_s "$relay_pid")
  start=$(now)
  id=$("$chapar" --profile "$work/$path-alice" send-file "@${path}_bob" "$file" 2>/dev/null)
  up=$(since "$start")
  "$chapar" --profile "$work/$path-bob" sync >/dev/null
  start=$(now)
  "$chapar" --profile "$work/$path-bob" download "$id" --out "$work/$path.out.bin" >/dev/null 2>&1
  down=$(since "$start")
  cmp -s "$file" "$work/$path.out.bin" || { echo "$path: the downloaded file differs" >&2; exit 1; }
  relay_cpu="-"
  if [ "$path" = relay ]; then
    cpu=$(python3 -c "print($(cpu_s "$relay_pid") - $cpu_before)")
    # Megabits carried both ways: the file went up and came down.
    relay_cpu=$(python3 -c "print(f'{$cpu:.2f} s, {$cpu * 1000 / ($mib * 2 * 8.388608):.3f} ms/Mbit')")
  fi
  printf '%-12s %8s %10.2f %10.1f %10.2f %10.1f %12s\n' "$path" "$mib" "$up" \
    "$(rate "$mib" "$up")" "$down" "$(rate "$mib" "$down")" "$relay_cpu"
done
