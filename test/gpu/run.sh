#!/usr/bin/env bash
# The GPU suite (`make gpu-test`), three parts, each skippable:
#   1. KYB_GPU_BENCH=0 skips: CUDA process checkpoint through the addon next to the same driver calls from
#      raw-checkpoint.c, device memory verified after every round (bench.ts);
#   2. KYB_GPU_CRIU=0 skips: full process checkpoint with CRIU through the kybernate CLI (criu-chain.sh);
#   3. KYB_GPU_CONTAINERS=0 skips: GPU containers (CUDA workload, PyTorch HTTP server) through containerd 2.1
#      and the kybernate shim — checkpoint/restore and suspend/resume in place — against runc + raw driver
#      calls, with answers verified after every restore/resume (containers.ts); and the same operations through
#      kybernate-agent (agent-path.ts: suspend/resume and checkpoint --exit/restore of a third container); then
#      kybernate-activator in front of the agent's torch container: idle → suspend / checkpoint, a request wakes
#      it (activator-path.ts: wake-* rows). First of all, the snapshot tiers: the agent gets a config file with a
#      disk tier on local disk, and one CUDA container of KYB_GPU_TIER_GIB is checkpointed into ram, restored,
#      checkpointed again, moved to disk and restored from there (tiers-path.ts: restore-from-ram,
#      move-to-disk, restore-from-disk rows).
# Needs a CUDA GPU, nvcc, nvidia-smi, python3 with torch (part 3) and root. node, containerd, runc, CRIU
# and our bundles come from .deps/gpu (test/gpu/pack.sh) when the machine has none of its own.
#   KYB_GPU_SIZES=1,4,8  KYB_GPU_ROUNDS=3  KYB_GPU_CRIU_GIB=4  KYB_GPU_CTR_GIB=4  KYB_GPU_CTR_ROUNDS=2
#   KYB_GPU_CTR_ONLY=cuda,torch  KYB_GPU_CTR_TIMEOUT=1800 (s; the container suite then writes what it has)
#   KYB_GPU_CTR_SUSPEND=0 (no suspend/resume rounds)  KYB_GPU_CTR_GROUP=0 (no restores into a warm group shim)
#   KYB_GPU_CTR_AGENT=0 (no kybernate-agent: no *-agent rows; the agent otherwise runs through all container rounds)
#   KYB_GPU_CTR_ACTIVATOR=0 (no kybernate-activator rounds: no wake-*/sleep-* rows; they need the agent and torch)
#   KYB_GPU_CTR_TIERS=0 (no snapshot-tier round; it needs the agent and cuda)  KYB_GPU_TIER_GIB=16 (its container's
#   device memory: the snapshot is that much and a little more, on /dev/shm and then on /var/tmp or the work dir)
#   KYB_GPU_OUT=<dir for results, tables and logs>
# On a lent machine: run test/gpu/pack.sh here, send the tree with .deps/gpu carried, and run
# `KYB_GPU_OUT=$OUT test/gpu/run.sh` there (test/gpu/RESULTS.md has the last numbers).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
deps="$root/.deps/gpu"
work=$(mktemp -d /tmp/kyb-gpu.XXXXXX)
out=${KYB_GPU_OUT:-$work/out}
mkdir -p "$out" "$work/bin"
cleanup() {
  # The agent of a container suite that was killed before it could stop it.
  if [ -f "$work/agent.pid" ]; then kill -9 "$(cat "$work/agent.pid")" 2>/dev/null; fi
  if [ -f "$work/activator.pid" ]; then kill -9 "$(cat "$work/activator.pid")" 2>/dev/null; fi
  # Containers of an interrupted container suite: runc's own state, then our private containerd.
  if [ -x "$work/bin/runc" ]; then
    for id in $("$work/bin/runc" --root "$work/runc-root" list -q 2>/dev/null); do "$work/bin/runc" --root "$work/runc-root" delete -f "$id" >/dev/null 2>&1; done
    for id in $("$work/bin/runc" --root /run/containerd/runc/kyb-gpu list -q 2>/dev/null); do "$work/bin/runc" --root /run/containerd/runc/kyb-gpu delete -f "$id" >/dev/null 2>&1; done
  fi
  rm -rf /dev/shm/kyb-gpu-images /var/tmp/kyb-gpu-tiers
  rm -rf "$work"
}
trap cleanup EXIT

unxz_to() {  # <file.xz> <dest>: xz may be missing on minimal images; Python's lzma reads the same format
  if command -v xz >/dev/null; then xz -dc "$1" > "$2"
  else python3 -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$2"; fi
  chmod +x "$2"
}
[ -f "$deps/bench.cjs" ] || "$here/pack.sh" || exit 1
if [ -f "$deps/node.xz" ]; then unxz_to "$deps/node.xz" "$work/node"; node="$work/node"
else node=$(command -v node) || { echo "gpu-test: no node here and no .deps/gpu/node.xz (run test/gpu/pack.sh)" >&2; exit 1; }; fi
export KYBERNATE_ADDON="$deps/kybernate.node"

cuda_home=${CUDA_HOME:-$(dirname "$(dirname "$(command -v nvcc)")")}
nvcc -O2 -o "$work/workload" "$here/workload.cu" || exit 1
cc -O2 -Wall -I"$cuda_home/include" -o "$work/raw-checkpoint" "$here/raw-checkpoint.c" \
  -L"$cuda_home/lib64/stubs" -lcuda -Wl,-rpath-link,"$cuda_home/lib64/stubs" || exit 1

# CRIU 4.1.1 needs a newer glibc than the GPU machine's: it runs through its own loader, and runc finds
# it as `criu` on PATH through this wrapper.
criu_dir=
if [ -f "$deps/criu.tar.xz" ]; then
  if command -v xz >/dev/null; then tar -C "$work" -xJf "$deps/criu.tar.xz"
  else python3 -c 'import tarfile,sys; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$deps/criu.tar.xz" "$work"; fi
  criu_dir="$work/criu"
  printf '#!/bin/sh\nexec "%s/lib/ld-linux-x86-64.so.2" --library-path "%s/lib" "%s/criu" "$@"\n' "$criu_dir" "$criu_dir" "$criu_dir" > "$work/bin/criu"
  chmod +x "$work/bin/criu"
  export KYBERNATE_CRIU="$work/bin/criu" KYBERNATE_LIBCRIU="$criu_dir/libcriu/libcriu.so.2" LD_LIBRARY_PATH="$criu_dir/libcriu"
fi

echo "gpu-test: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader); node $("$node" -v)"
echo "gpu-test: THP $(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null || echo '?')"
status=0
if [ "${KYB_GPU_BENCH:-1}" != 0 ]; then
  "$node" "$deps/bench.cjs" --workload "$work/workload" --raw "$work/raw-checkpoint" \
    --sizes "${KYB_GPU_SIZES:-1,4,8}" --rounds "${KYB_GPU_ROUNDS:-3}" --out "$out" || status=1
fi
if [ "${KYB_GPU_CRIU:-1}" != 0 ]; then
  if [ -n "$criu_dir" ] && [ -f "$deps/kybernate.cjs" ]; then
    "$here/criu-chain.sh" "$node" "$work/workload" "$work" "${KYB_GPU_CRIU_GIB:-4}" || status=1
  else
    echo "gpu-test: skipped the CRIU process checkpoint (no .deps/gpu/criu.tar.xz: run test/gpu/pack.sh)"
  fi
fi
if [ "${KYB_GPU_CONTAINERS:-1}" != 0 ]; then
  if [ -n "$criu_dir" ] && [ -f "$deps/containerd.xz" ] && [ -f "$deps/runc.xz" ] && [ -f "$deps/containers.cjs" ]; then
    unxz_to "$deps/containerd.xz" "$work/bin/containerd"
    unxz_to "$deps/runc.xz" "$work/bin/runc"
    # containerd finds the runtime io.containerd.kybernate.v2 as this name on its PATH.
    if [ -f "$deps/dist/containerd-shim-kybernate-v2.build" ] && [ -f "$deps/shim-front" ]; then
      # The native front, as `make build` installs it, with a conf naming this machine's node and bundle.
      install -m 0755 "$deps/shim-front" "$work/bin/containerd-shim-kybernate-v2"
      printf 'build=%s\nnode=%s\nscript=%s\n' "$(cat "$deps/dist/containerd-shim-kybernate-v2.build")" "$node" \
        "$deps/dist/containerd-shim-kybernate-v2.cjs" > "$work/bin/containerd-shim-kybernate-v2.conf"
      grep '^arg=' "$deps/dist/containerd-shim-kybernate-v2.conf" >> "$work/bin/containerd-shim-kybernate-v2.conf" 2>/dev/null || true
    else
      printf '#!/bin/sh\nexec "%s" "%s/dist/containerd-shim-kybernate-v2.cjs" "$@"\n' "$node" "$deps" > "$work/bin/containerd-shim-kybernate-v2"
      chmod +x "$work/bin/containerd-shim-kybernate-v2"
    fi
    "$work/bin/runc" --version | head -1
    "$work/bin/criu" check || echo "gpu-test: criu check reported problems (above)"
    timeout "${KYB_GPU_CTR_TIMEOUT:-1800}" "$node" "$deps/containers.cjs" --work "$work" --out "$out" --logs "$work/logs" --bin "$work/bin" --node "$node" \
      --cli "$deps/dist/kybernate.cjs" --workload "$work/workload" --raw "$work/raw-checkpoint" \
      --server "$here/torch-server.py" --gib "${KYB_GPU_CTR_GIB:-4}" --rounds "${KYB_GPU_CTR_ROUNDS:-2}" \
      --only "${KYB_GPU_CTR_ONLY:-cuda,torch}" --suspend "${KYB_GPU_CTR_SUSPEND:-1}" --group "${KYB_GPU_CTR_GROUP:-1}" \
      --agent "${KYB_GPU_CTR_AGENT:-1}" --activator "${KYB_GPU_CTR_ACTIVATOR:-1}" \
      --tiers "${KYB_GPU_CTR_TIERS:-1}" --tier-gib "${KYB_GPU_TIER_GIB:-16}" || status=1
  else
    echo "gpu-test: skipped the container suite (no containerd.xz/runc.xz/criu.tar.xz/containers.cjs in .deps/gpu: run test/gpu/pack.sh)"
  fi
fi
# The device tool brings back few files: every log of the container suite travels as one tarball.
if [ -d "$work/logs" ]; then
  find "$work/ctd/state" "$work/criu-work" /run/containerd/runc -name '*.log' 2>/dev/null | while read -r f; do
    cp "$f" "$work/logs/$(echo "${f#/}" | tr / _)" 2>/dev/null || true
  done
  tar -C "$work" -czf "$out/container-logs.tgz" logs && echo "gpu-test: container suite logs in $out/container-logs.tgz"
fi
exit $status
