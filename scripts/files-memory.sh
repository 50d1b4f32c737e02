#!/usr/bin/env bash
# Uploads (one PATCH) and downloads (one GET) a 1 GiB file through a server running in its own
# process, and prints the server's peak RSS (VmHWM from /proc/<pid>/status) after a 16 MiB
# file and after the large one: it must not grow with the file's size.
#
#   scripts/files-memory.sh            # debug build, 1 GiB
#   scripts/files-memory.sh --release  # release build (do not run while someone benchmarks)
#   CHAPAR_FILES_MEMORY_BYTES=4294967296 scripts/files-memory.sh   # another size
#
# Needs the file's size free under $TMPDIR (the server's data directory lives there). The
# figures depend on the build: the debug build's server is slower but its memory is comparable.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test -p chapar-server "$@" --test files -- --ignored --exact --nocapture \
  memory::server_rss_does_not_grow_with_file_size 2>&1 | grep -E "server peak RSS|test result|panicked|FAILED"
