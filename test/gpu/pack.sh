#!/usr/bin/env bash
# Run on the development machine before sending the tree to a GPU machine that has no node/npm,
# containerd, runc or CRIU: fills .deps/gpu/ (git-ignored; name it in the device run's `carry`):
#   node.xz                     this node
#   kybernate.node, bench.cjs   the addon and test/gpu/bench.ts bundled (the process-level suite)
#   dist/                       the shim, CLI, agent and activator bundles with the addon beside them (`make build` output)
#   containers.cjs              test/gpu/containers.ts bundled (the container suite)
#   containerd.xz, runc.xz      containerd 2.1 (.deps/containerd-2.1, `make setup`) and this machine's runc
#   criu.tar.xz                 CRIU with its own loader and libraries (test/gpu/pack-criu.sh)
# test/gpu/run.sh uses them when present. Everything must fit the device tool's 64 MiB per run.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out="$root/.deps/gpu"
mkdir -p "$out"
xzcopy() {  # <source> <dest.xz>: only when the source is newer
  if [ ! -f "$2" ] || [ "$1" -nt "$2" ]; then xz -6 -T0 -c "$1" > "$2.tmp" && mv "$2.tmp" "$2"; fi
}
# The GPU machine has glibc 2.39: nothing carried may need a newer symbol version.
glibc_ok() {
  local newest
  newest=$(objdump -T "$1" | grep -o 'GLIBC_2\.[0-9]*' | sort -uV | tail -1)
  if [ "$(printf '%s\nGLIBC_2.39\n' "$newest" | sort -V | tail -1)" != "GLIBC_2.39" ]; then
    echo "pack: $1 needs $newest, newer than the GPU machine's glibc 2.39" >&2
    exit 1
  fi
}
xzcopy "$(command -v node)" "$out/node.xz"
make -C "$root" --no-print-directory build
glibc_ok "$root/build/Release/kybernate.node"
cp "$root/build/Release/kybernate.node" "$out/kybernate.node"
rm -rf "$out/dist" && mkdir -p "$out/dist"
cp "$root/dist/containerd-shim-kybernate-v2.cjs" "$root/dist/kybernate.cjs" "$root/dist/kybernate-agent.cjs" "$root/dist/kybernate-activator.cjs" "$root/dist/kybernate.node" "$out/dist/"
cp "$root/dist/kybernate.cjs" "$out/kybernate.cjs"
# The shim's native front and its build id (run.sh writes its conf with the GPU machine's paths).
if [ -f "$root/dist/containerd-shim-kybernate-v2.build" ]; then
  glibc_ok "$root/build/Release/kybernate-shim-front"
  cp "$root/build/Release/kybernate-shim-front" "$out/shim-front"
  cp "$root/dist/containerd-shim-kybernate-v2.build" "$out/dist/"
  grep '^arg=' "$root/bin/containerd-shim-kybernate-v2.conf" > "$out/dist/containerd-shim-kybernate-v2.conf" || true
fi
esb() { "$root/node_modules/.bin/esbuild" "$1" --bundle --platform=node --target=node20 --format=cjs \
  '--external:*.node' --log-level=warning --outfile="$2"; }
esb "$root/test/gpu/bench.ts" "$out/bench.cjs"
esb "$root/test/gpu/containers.ts" "$out/containers.cjs"
ctd="$root/.deps/containerd-2.1/bin/containerd"
if [ -x "$ctd" ]; then glibc_ok "$ctd"; xzcopy "$ctd" "$out/containerd.xz"
else echo "pack: no $ctd (make setup): the container suite will be skipped" >&2; fi
runc=$(command -v runc || echo /usr/sbin/runc)
if [ -x "$runc" ]; then glibc_ok "$runc"; xzcopy "$runc" "$out/runc.xz"
else echo "pack: no runc here: the container suite will be skipped" >&2; fi
[ -f "$out/criu.tar.xz" ] || "$root/test/gpu/pack-criu.sh"
rm -rf "$out/criu"  # older packs kept CRIU unpacked; the tarball replaces it
du -sh "$out"/* | sort -h
total=$(( $(du -sb "$out" | cut -f1) + $(cd "$root" && git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1) ))
echo "pack: .deps/gpu + tracked files = $((total / 1048576)) MiB (the device tool carries at most 64 MiB)"
