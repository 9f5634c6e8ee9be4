#!/usr/bin/env bash
# Optional part of the GPU suite: copies this machine's CRIU (trixie 4.1.1: `make setup` installs it)
# with every library it loads, its own ld-linux and glibc included, into .deps/gpu/criu/, plus the
# bundled `kybernate` CLI. The GPU machine has no CRIU; test/gpu/criu-chain.sh runs this copy there
# through its own loader (ENVIRONMENT.md: that is how CRIU 4.1.1 passes `criu check` there).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out="$root/.deps/gpu/criu"
rm -rf "$out"
mkdir -p "$out/lib" "$out/libcriu"
criu=$(command -v criu || echo /usr/sbin/criu)
cp "$criu" "$out/criu"
ldd "$criu" | awk '/=> \//{print $3} /^\s*\/lib/{print $1}' | while read -r lib; do cp -L "$lib" "$out/lib/"; done
cp -L /lib64/ld-linux-x86-64.so.2 "$out/lib/"
# libcriu is loaded into node (the addon dlopens it), so it gets only its one dependency beside it,
# never the copied glibc.
cp -L "$(ldconfig -p | awk '/libcriu.so.2 /{print $NF; exit}')" "$out/libcriu/libcriu.so.2"
cp -L "$(ldconfig -p | awk '/libprotobuf-c.so.1 /{print $NF; exit}')" "$out/libcriu/"
"$root/node_modules/.bin/esbuild" "$root/src/cli/main.ts" --bundle --platform=node --target=node20 --format=cjs \
  '--external:*.node' --log-level=warning --outfile="$root/.deps/gpu/kybernate.cjs"
du -sh "$out" "$root/.deps/gpu/kybernate.cjs"
