#!/usr/bin/env bash
# Part of test/gpu/pack.sh: this machine's CRIU (trixie 4.1.1: `make setup` installs it) with every library
# it loads, its own ld-linux and glibc included, as .deps/gpu/criu.tar.xz (criu/criu, criu/lib/,
# criu/libcriu/). The GPU machine has no CRIU; run.sh unpacks it and starts it through its own loader
# (ENVIRONMENT.md: that is how CRIU 4.1.1 passes `criu check` there).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
out="$stage/criu"
mkdir -p "$out/lib" "$out/libcriu"
criu=$(command -v criu || echo /usr/sbin/criu)
cp "$criu" "$out/criu"
ldd "$criu" | awk '/=> \//{print $3} /^\s*\/lib/{print $1}' | while read -r lib; do cp -L "$lib" "$out/lib/"; done
cp -L /lib64/ld-linux-x86-64.so.2 "$out/lib/"
# libcriu is loaded into node (the addon dlopens it), so it gets only its one dependency beside it,
# never the copied glibc.
cp -L "$(ldconfig -p | awk '/libcriu.so.2 /{print $NF; exit}')" "$out/libcriu/libcriu.so.2"
cp -L "$(ldconfig -p | awk '/libprotobuf-c.so.1 /{print $NF; exit}')" "$out/libcriu/"
mkdir -p "$root/.deps/gpu"
tar -C "$stage" -cf - criu | xz -6 -T0 > "$root/.deps/gpu/criu.tar.xz"
du -sh "$root/.deps/gpu/criu.tar.xz"
