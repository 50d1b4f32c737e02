#!/usr/bin/env bash
# Runs every fuzz target (or the ones named after the time) for SECONDS each (default 30):
#   fuzz/run.sh [SECONDS] [TARGET...]
# On the stable toolchain, with RUSTC_BOOTSTRAP=1 for the unstable flags cargo-fuzz passes;
# installs cargo-fuzz if it is missing. Each run starts from the committed corpus
# (fuzz/corpus/<target>) and writes what it finds into a temporary directory, so the tree
# stays clean; crashes go to fuzz/artifacts/<target>/ (ignored by git). Builds go to
# $CARGO_TARGET_DIR, or $HOME/.cache/chapar-fuzz-target (with "-address" appended for an
# AddressSanitizer build).
#
# Environment: FUZZ_SANITIZER (none, the default, or address: it builds on stable with
# RUSTC_BOOTSTRAP=1 too, and runs about 6 times slower); CARGO_BUILD_JOBS as for any build.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-30}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  targets=(frame_codec dispatcher tus_headers engine_replies)
fi

sanitizer="${FUZZ_SANITIZER:-none}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chapar-fuzz-target}"
# Cargo does not tell builds apart by their flags, so a sanitizer's build would overwrite the
# plain one (and the next plain run rebuild everything): each gets a directory of its own.
if [ "$sanitizer" != none ]; then
  CARGO_TARGET_DIR="$CARGO_TARGET_DIR-$sanitizer"
fi
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=never

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

# -a: debug assertions and overflow checks on, so an arithmetic overflow is a crash too.
build=(--sanitizer "$sanitizer" --debug-assertions)
for target in "${targets[@]}"; do
  cargo fuzz build "${build[@]}" "$target"
done

scratch="$(mktemp -d "${TMPDIR:-/tmp}/chapar-fuzz.XXXXXX")"
# The targets' SQLite stores, in memory where possible (their fsyncs then cost nothing).
shm=/dev/shm
[ -d "$shm" ] || shm="${TMPDIR:-/tmp}"
export CHAPAR_FUZZ_STORES="$(mktemp -d "$shm/chapar-fuzz-stores.XXXXXX")"
trap 'rm -rf "$scratch" "$CHAPAR_FUZZ_STORES"' EXIT
status=0
for target in "${targets[@]}"; do
  echo "=== $target: ${seconds}s"
  mkdir -p "$scratch/$target" "artifacts/$target"
  # New inputs go into the first directory (the scratch one); the committed corpus is only
  # read. A crash, leak or timeout stops the run and leaves its input in artifacts/.
  if ! cargo fuzz run "${build[@]}" "$target" "$scratch/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=30 -print_final_stats=1; then
    echo "=== $target FAILED: see fuzz/artifacts/$target/" >&2
    status=1
  fi
done
exit "$status"
