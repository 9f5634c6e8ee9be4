#!/bin/sh
# Runs the addon's calls under valgrind memcheck; fails on definite leaks or memory errors in them.
# Slow (a few minutes: node under valgrind). Needs root (setSubreaper, mount) and a built addon.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
exec valgrind --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite \
  --child-silent-after-fork=yes --error-exitcode=1 node "$here/fixtures/leak.cjs"
