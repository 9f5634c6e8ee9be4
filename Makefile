# Kybernate: build, test and install.
#
#   make setup     system packages, containerd 1.7/2.1 side by side, npm packages, build, test image
#   make build     protobuf code (scripts/gen-proto.cjs), the C++ addon (incremental) and the bundled
#                  shim/CLI/agent in dist/ + bin/ (scripts/bundle.cjs)
#   make demo      `kybernate demo`: a workload goes to zero when idle and wakes on the next request
#   make test      the whole vitest suite (unit + end-to-end against private containerd daemons)
#   make bench     test/bench/run.cjs
#   make install   dist/ and the addon to $(PREFIX)/lib/kybernate, launchers to $(PREFIX)/bin
#   make gpu-test  test/gpu/run.sh (on a GPU machine): process-level suite + GPU container suite
#   make clean     build outputs; `make distclean` also node_modules and .deps
#
# setup needs root and Debian 12 (it runs apt-get). Every step is idempotent.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DELETE_ON_ERROR:
.NOTPARALLEL:
.DEFAULT_GOAL := build

PREFIX ?= /usr/local
DESTDIR ?=
NODE ?= $(shell command -v node)
NODE_GYP := node_modules/.bin/node-gyp
IMAGE := .deps/images/busybox.tar
CONTAINERD_VERSIONS := 1.7 2.1

# node-gyp would download Node's headers from nodejs.org, which is not reachable from the build
# machines; Debian's/NodeSource's nodejs package ships them under <prefix>/include/node.
NODE_PREFIX := $(patsubst %/bin/node,%,$(NODE))
ifneq ($(wildcard $(NODE_PREFIX)/include/node/node_api.h),)
export npm_config_nodedir ?= $(NODE_PREFIX)
endif
export DEBIAN_FRONTEND := noninteractive

.PHONY: setup system-deps containerd-deps node-deps build gen native bundle image test bench demo \
	install gpu-test clean distclean

setup: system-deps containerd-deps node-deps build image
	@echo "setup: done"

system-deps:
	@test/env/setup-system.sh

containerd-deps: system-deps $(foreach v,$(CONTAINERD_VERSIONS),.deps/containerd-$(v)/VERSION)

# One run of the script fetches every version that is missing or stale.
$(foreach v,$(CONTAINERD_VERSIONS),.deps/containerd-$(v)/VERSION) &: test/env/fetch-containerd.sh
	@test/env/fetch-containerd.sh

node-deps: node_modules/.package-lock.json

# npm ci rewrites node_modules/.package-lock.json, which makes it the stamp for the lockfile.
node_modules/.package-lock.json: package-lock.json package.json
	@echo "setup: npm ci"
	@npm ci --no-audit --no-fund --loglevel=error
	@touch $@

build: node-deps gen native bundle

gen: src/gen/proto.js

src/gen/proto.js: $(shell find proto -name '*.proto') scripts/gen-proto.cjs node_modules/.package-lock.json
	@npm run --silent gen

# Incremental: configure only when binding.gyp changed, then let make (inside build/) rebuild
# what changed. binding.gyp missing is an error, as it is for `npm run build:native`.
native: build/Makefile
	@$(NODE_GYP) build --silent --jobs max

build/Makefile: binding.gyp node_modules/.package-lock.json
	@$(NODE_GYP) configure --silent

bundle: native
	@npm run --silent build:ts

image: $(IMAGE)

$(IMAGE): test/images/build-busybox-image.cjs /bin/busybox
	@$(NODE) test/images/build-busybox-image.cjs --busybox /bin/busybox --out $@

test: build image
	@npx vitest run

# The main job on one host: scale to zero and wake (README, first section). Needs root and `make setup`.
demo: build image
	@bin/kybernate demo

bench: build image
	@$(NODE) test/bench/run.cjs
	@$(NODE) test/bench/checkpoint.cjs
	@$(NODE) test/bench/agent.cjs
	@$(NODE) test/bench/activator.cjs
	@$(NODE) test/bench/wake.cjs
	@$(NODE) test/bench/tiers.cjs
	@$(NODE) test/bench/docker.cjs

install: build
	install -d $(DESTDIR)$(PREFIX)/lib/kybernate $(DESTDIR)$(PREFIX)/bin
	install -m 0644 dist/*.cjs $(wildcard dist/*.cjs.map) dist/kybernate.node $(DESTDIR)$(PREFIX)/lib/kybernate/
	@for name in containerd-shim-kybernate-v2 kybernate kybernate-agent kybernate-activator; do \
	  test -f dist/$$name.cjs || { echo "install: dist/$$name.cjs was not built" >&2; exit 1; }; \
	  if [ -f dist/$$name.build ]; then \
	    install -m 0755 bin/$$name $(DESTDIR)$(PREFIX)/bin/$$name; \
	    printf '# written by make install: the native front reads it\nbuild=%s\nnode=%s\nscript=%s\n' \
	      "$$(cat dist/$$name.build)" "$(NODE)" "$(PREFIX)/lib/kybernate/$$name.cjs" > $(DESTDIR)$(PREFIX)/bin/$$name.conf; \
	    grep '^arg=' bin/$$name.conf >> $(DESTDIR)$(PREFIX)/bin/$$name.conf || true; \
	    echo "install: $(DESTDIR)$(PREFIX)/bin/$$name (native front) and $$name.conf"; continue; \
	  fi; \
	  printf '#!%s\n'"'use strict';"'\nrequire(%s);\n' "$(NODE)" "'$(PREFIX)/lib/kybernate/$$name.cjs'" \
	    > $(DESTDIR)$(PREFIX)/bin/$$name; \
	  chmod 0755 $(DESTDIR)$(PREFIX)/bin/$$name; \
	  echo "install: $(DESTDIR)$(PREFIX)/bin/$$name"; \
	done

# No `build` prerequisite: the lent GPU machines have no npm. run.sh uses .deps/gpu from test/gpu/pack.sh
# (node, containerd 2.1, runc, CRIU and our bundles; run beforehand on the build machine) or runs
# pack.sh itself where node_modules exist.
gpu-test:
	@if [ -x test/gpu/run.sh ]; then test/gpu/run.sh; \
	else echo "gpu-test: test/gpu/run.sh does not exist yet: there are no GPU tests to run" >&2; exit 1; fi

clean:
	rm -rf build dist bin src/gen

distclean: clean
	rm -rf node_modules .deps
