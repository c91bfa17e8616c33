# nettrace: `make help` lists the targets. Quiet unless V=1.
.DELETE_ON_ERROR:
.DEFAULT_GOAL := help
Q := $(if $(V),,@)
CLANG ?= clang
ARCH := $(shell uname -m | sed 's/x86_64/x86/;s/aarch64/arm64/')
BPF_CFLAGS := -g -O2 -target bpf -Wall -Werror -D__TARGET_ARCH_$(ARCH) -Ibuild -Ibpf
BPF_SRC := $(wildcard bpf/*.bpf.c)
BPF_OBJ := $(patsubst bpf/%.bpf.c,build/%.bpf.o,$(BPF_SRC))
# programs of "another tool" for the coexistence tests
FIXTURE_OBJ := $(patsubst test/fixtures/%.bpf.c,build/fixtures/%.bpf.o,$(wildcard test/fixtures/*.bpf.c))
TS_SRC := $(shell find src test bench scripts -name '*.ts' 2>/dev/null)
NODE_TEST := node --test --test-concurrency=1 --test-reporter=spec

.PHONY: help deps build gen demo test test-unit bench image clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

deps: ## install what building and testing need (apt packages, npm modules)
	$(Q)scripts/deps.sh

build/vmlinux.h:
	$(Q)mkdir -p build
	@echo "  GEN   $@"
	$(Q)bpftool btf dump file /sys/kernel/btf/vmlinux format c > $@

build/%.bpf.o: bpf/%.bpf.c $(wildcard bpf/*.h) build/vmlinux.h
	@echo "  BPF   $@"
	$(Q)$(CLANG) $(BPF_CFLAGS) -c $< -o $@

build/fixtures/%.bpf.o: test/fixtures/%.bpf.c build/vmlinux.h
	$(Q)mkdir -p build/fixtures
	@echo "  BPF   $@"
	$(Q)$(CLANG) $(BPF_CFLAGS) -c $< -o $@

dist/.stamp: $(TS_SRC) tsconfig.json package-lock.json
	@echo "  TSC   dist/"
	@# from scratch: a test whose source was removed must not linger in dist/ and run
	$(Q)rm -rf dist
	$(Q)npx --no-install tsc -p tsconfig.json
	$(Q)touch $@

build: $(BPF_OBJ) $(FIXTURE_OBJ) dist/.stamp ## compile the BPF objects and the TypeScript

gen: $(BPF_OBJ) ## regenerate src/probe/layout.generated.ts (layouts, enums, program and map names) from the objects' BTF
	@# the generator compiles even while the rest does not yet match the new header
	$(Q)npx --no-install tsc -p tsconfig.json >/dev/null || true
	$(Q)node dist/scripts/gen-layout.js src/probe/layout.generated.ts build/hop.bpf.o build/agent.bpf.o
	$(Q)npx --no-install tsc -p tsconfig.json

demo: deps build ## bring up the two-node test cluster, curl pod B from pod A, show the nine steps, take it down
	$(Q)scripts/demo.sh

test: deps build ## run every test (unit, BPF_PROG_TEST_RUN, real two-node cluster)
	$(Q)$(NODE_TEST) dist/test/

test-unit: build ## only the tests that need no root
	$(Q)$(NODE_TEST) dist/test/unit/

bench: deps build ## benchmarks: throughput and per-run cost against baselines in the same run
	$(Q)node dist/bench/run.js

# the first of podman, buildah, docker found builds it; IMAGE=registry.example.com/nettrace:TAG to name it
IMAGE ?= nettrace:$(shell node -p "require('./package.json').version")
image: ## build the container image from Containerfile (podman, buildah or docker)
	$(Q)engine=$$(for e in podman buildah docker; do command -v $$e >/dev/null 2>&1 && { echo $$e; break; }; done); \
	if [ -z "$$engine" ]; then echo "make image: none of podman, buildah or docker is installed" >&2; exit 1; fi; \
	echo "  IMAGE $(IMAGE) ($$engine)"; \
	$$engine build -f Containerfile -t $(IMAGE) .

clean: ## remove build outputs
	$(Q)rm -rf build dist
