#!/usr/bin/env bash
# Run on the development machine before sending the tree to a GPU machine that has no node/npm:
# puts into .deps/gpu/ (git-ignored; name it in the device run's `carry`) an xz copy of this node, the
# built addon and the esbuild bundle of test/gpu/bench.ts. test/gpu/run.sh uses them when present.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out="$root/.deps/gpu"
mkdir -p "$out"
node=$(command -v node)
if [ ! -f "$out/node.xz" ] || [ "$node" -nt "$out/node.xz" ]; then
  xz -6 -T0 -c "$node" > "$out/node.xz.tmp" && mv "$out/node.xz.tmp" "$out/node.xz"
fi
make -C "$root" --no-print-directory native
cp "$root/build/Release/kybernate.node" "$out/kybernate.node"
# The GPU machine has glibc 2.39: the addon must not need a newer symbol version.
newest=$(objdump -T "$out/kybernate.node" | grep -o 'GLIBC_2\.[0-9]*' | sort -uV | tail -1)
if [ "$(printf '%s\nGLIBC_2.39\n' "$newest" | sort -V | tail -1)" != "GLIBC_2.39" ]; then
  echo "pack: the addon needs $newest, newer than the GPU machine's glibc 2.39" >&2
  exit 1
fi
"$root/node_modules/.bin/esbuild" "$root/test/gpu/bench.ts" --bundle --platform=node --target=node20 --format=cjs \
  '--external:*.node' --log-level=warning --outfile="$out/bench.cjs"
du -sh "$out"/*
