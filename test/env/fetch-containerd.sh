#!/usr/bin/env bash
# Unpacks containerd 1.7 (trixie) and 2.1 (sid) next to the system's 1.6, into
# .deps/containerd-<minor>/bin/{containerd,ctr,containerd-shim-runc-v2}, so the tests can run every
# supported containerd side by side. The packages are never installed (dpkg -x only): both need
# only libc >= 2.34 and a runc, and the system runc (bookworm) serves all three.
# Needs the trixie/sid apt sources that setup-system.sh adds. Idempotent via a VERSION stamp.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

root=$(cd "$(dirname "$0")/../.." && pwd)
deps="$root/.deps"
# minor  apt release  expected upstream version prefix
WANT=("1.7 trixie 1.7." "2.1 sid 2.1.")
BINARIES=(containerd ctr containerd-shim-runc-v2)

say() { printf 'fetch-containerd: %s\n' "$*"; }
die() { printf 'fetch-containerd: ERROR: %s\n' "$*" >&2; exit 1; }

for entry in "${WANT[@]}"; do
  read -r minor release prefix <<<"$entry"
  dest="$deps/containerd-$minor"
  # awk reads to the end: exiting early would SIGPIPE apt-cache and fail the pipeline.
  version=$(apt-cache show "containerd/$release" 2>/dev/null | awk '/^Version:/ && !v { v = $2 } END { print v }')
  [ -n "$version" ] || die "no containerd in apt release '$release' (run setup-system.sh first)"
  case "${version#*:}" in "$prefix"*) ;; *) die "containerd/$release is $version, expected $prefix*" ;; esac
  if [ -f "$dest/VERSION" ] && [ "$(cat "$dest/VERSION")" = "$version" ] && [ -x "$dest/bin/containerd" ]; then
    touch "$dest/VERSION" # up to date: newer than this script for make
    continue
  fi
  say "containerd $version ($release) -> ${dest#"$root"/}"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  # The download directory belongs to root; without this apt warns that its _apt sandbox
  # user cannot write there.
  (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root "containerd=$version" >/dev/null)
  dpkg -x "$tmp"/containerd_*.deb "$tmp/x"
  rm -rf "$dest"
  mkdir -p "$dest/bin"
  for b in "${BINARIES[@]}"; do
    [ -x "$tmp/x/usr/bin/$b" ] || die "containerd $version ships no usr/bin/$b"
    mv "$tmp/x/usr/bin/$b" "$dest/bin/$b"
  done
  printf '%s\n' "$version" >"$dest/VERSION"
  rm -rf "$tmp"
  trap - EXIT
  "$dest/bin/containerd" --version >/dev/null || die "$dest/bin/containerd does not run"
done
say "ok: $(for d in "$deps"/containerd-*/VERSION; do printf '%s ' "$(cat "$d")"; done)"
