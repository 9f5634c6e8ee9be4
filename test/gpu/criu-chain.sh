#!/usr/bin/env bash
# GPU suite step 2 (run.sh calls it when .deps/gpu/criu.tar.xz exists, see pack-criu.sh): full process
# checkpoint of the CUDA workload with the `kybernate process checkpoint/restore` CLI (CUDA lock +
# checkpoint → CRIU dump → process gone → CRIU restore → CUDA restore + unlock), then the workload
# re-reads its device memory. The workload talks through a FIFO (stdin) and a regular file (stdout),
# which CRIU dumps and restores by path; a pipe to this script would be an external pipe.
# Usage: criu-chain.sh <node> <workload binary> <work dir> <GiB>; run.sh has unpacked CRIU into <work dir>/criu
# and written the wrapper <work dir>/bin/criu, which starts it through its own loader.
set -euo pipefail
node=$1 wl=$2 work=$3 gib=$4
root=$(cd "$(dirname "$0")/../.." && pwd)
deps="$root/.deps/gpu"
criu_dir="$work/criu"
images=/dev/shm/kyb-criu-chain
rm -rf "$images" && mkdir -p "$images"
export KYBERNATE_CRIU="$work/bin/criu" KYBERNATE_LIBCRIU="$criu_dir/libcriu/libcriu.so.2" LD_LIBRARY_PATH="$criu_dir/libcriu"
"$work/bin/criu" --version | head -1
"$work/bin/criu" check || echo "criu-chain: criu check reported problems (above)"
cli() { "$node" "$deps/kybernate.cjs" "$@"; }

fifo="$work/cmd.fifo" out="$work/wl.out"
mkfifo "$fifo"
setsid "$wl" "$gib" <> "$fifo" > "$out" 2> "$work/wl.err" &
last() { tail -n 1 "$out" 2>/dev/null || true; }
wait_line() {  # waits for a new line starting with $1 after $2 lines
  for _ in $(seq 1 600); do
    if [ "$(wc -l < "$out")" -gt "$2" ] && last | grep -q "^$1"; then last; return 0; fi
    sleep 0.1
  done
  echo "criu-chain: no '$1' line from the workload" >&2; cat "$work/wl.err" >&2; return 1
}
pid=$(wait_line ready 0 | awk '{print $2}')
echo verify > "$fifo"; before=$(wait_line verify 1)
echo "criu-chain: workload pid $pid ($gib GiB): $before; GPU used $(nvidia-smi --query-gpu=memory.used --format=csv,noheader)"

t0=$(date +%s.%N)
cli process checkpoint --pid "$pid" --images "$images"
t1=$(date +%s.%N)
if kill -0 "$pid" 2>/dev/null; then echo "FAIL criu-chain: pid $pid still exists after checkpoint"; exit 1; fi
echo "criu-chain: checkpoint $(awk "BEGIN{printf \"%.2f\", $t1 - $t0}") s wall; image $(du -sh "$images" | cut -f1); GPU used $(nvidia-smi --query-gpu=memory.used --format=csv,noheader)"
cli process restore --images "$images"
t2=$(date +%s.%N)
echo "criu-chain: restore $(awk "BEGIN{printf \"%.2f\", $t2 - $t1}") s wall; GPU used $(nvidia-smi --query-gpu=memory.used --format=csv,noheader)"
n=$(wc -l < "$out")
echo verify > "$fifo"; after=$(wait_line verify "$n")
echo quit > "$fifo"
rm -rf "$images"
if [ "$after" = "$before" ]; then echo "ok   criu-chain: restored workload memory intact ($after)"
else echo "FAIL criu-chain: memory after restore: '$after', before: '$before'"; exit 1; fi
