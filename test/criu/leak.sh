#!/bin/sh
# Runs the addon's CRIU calls under valgrind memcheck; fails on definite leaks or memory errors in them.
# Slow (minutes: node under valgrind). Needs root, criu and a built addon. The criu children are not
# traced (--trace-children=no): only this process's memory is checked.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
exec valgrind --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite \
  --child-silent-after-fork=yes --error-exitcode=1 node "$here/fixtures/leak.cjs"
