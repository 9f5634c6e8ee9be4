#!/usr/bin/env bash
# The GPU suite (`make gpu-test`): CUDA process checkpoint through the addon next to the same driver
# calls from raw-checkpoint.c, with device memory verified after every round. Needs a CUDA GPU, nvcc,
# nvidia-smi and root (cgroup freezer checks). node and the addon come from .deps/gpu (test/gpu/pack.sh)
# when the machine has no node of its own.
#   KYB_GPU_SIZES=1,4,8  KYB_GPU_ROUNDS=3  KYB_GPU_OUT=<dir for results.json/table.md>
#   KYB_GPU_BENCH=0 skips the addon/raw comparison; KYB_GPU_CRIU_GIB=4 sizes the CRIU chain's workload
# On a lent machine without node: run test/gpu/pack.sh here, send the tree with .deps/gpu carried, and
# run `KYB_GPU_OUT=$OUT test/gpu/run.sh` there (test/gpu/RESULTS.md has the last numbers).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
deps="$root/.deps/gpu"
work=$(mktemp -d /tmp/kyb-gpu.XXXXXX)
out=${KYB_GPU_OUT:-$work}
trap 'rm -rf "$work"' EXIT

if [ -f "$deps/node.xz" ]; then
  # xz may be missing on minimal images; Python's lzma reads the same format.
  if command -v xz >/dev/null; then xz -dc "$deps/node.xz" > "$work/node"
  else python3 -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$deps/node.xz" "$work/node"; fi
  chmod +x "$work/node"
  node="$work/node"
else
  node=$(command -v node) || { echo "gpu-test: no node here and no .deps/gpu/node.xz (run test/gpu/pack.sh)" >&2; exit 1; }
fi
if [ -f "$deps/bench.cjs" ] && [ -f "$deps/kybernate.node" ]; then
  bench="$deps/bench.cjs"
  export KYBERNATE_ADDON="$deps/kybernate.node"
else
  "$here/pack.sh"
  bench="$deps/bench.cjs"
  export KYBERNATE_ADDON="$deps/kybernate.node"
fi

cuda_home=${CUDA_HOME:-$(dirname "$(dirname "$(command -v nvcc)")")}
nvcc -O2 -o "$work/workload" "$here/workload.cu"
cc -O2 -Wall -I"$cuda_home/include" -o "$work/raw-checkpoint" "$here/raw-checkpoint.c" \
  -L"$cuda_home/lib64/stubs" -lcuda -Wl,-rpath-link,"$cuda_home/lib64/stubs"

echo "gpu-test: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader); node $("$node" -v)"
echo "gpu-test: THP $(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null || echo '?')"
if [ "${KYB_GPU_BENCH:-1}" != 0 ]; then
  "$node" "$bench" --workload "$work/workload" --raw "$work/raw-checkpoint" \
    --sizes "${KYB_GPU_SIZES:-1,4,8}" --rounds "${KYB_GPU_ROUNDS:-3}" --out "$out"
fi
# Full process checkpoint with CRIU through the kybernate CLI, when pack-criu.sh provided CRIU.
if [ -d "$deps/criu" ] && [ -f "$deps/kybernate.cjs" ]; then
  "$here/criu-chain.sh" "$node" "$work/workload" "$work" "${KYB_GPU_CRIU_GIB:-4}"
else
  echo "gpu-test: skipped the CRIU process checkpoint (no .deps/gpu/criu: run test/gpu/pack-criu.sh)"
fi
