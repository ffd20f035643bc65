#!/usr/bin/env bash
# `make test`: the unit tests once, then the integration suite against each Docker engine named in
# S3DOCK_TEST_ENGINES (default: 20.10, 28 on the graphdriver store, 28 on the containerd store; the
# files about the bucket protocol alone against the first), then the cross-engine tests (push through one engine, pull and deploy through another) when more
# than one engine is named. Ends with one line counting every run's tests. Arguments go to vitest.
# Needs the environment `scripts/test-infra.sh env` prints (make test sets it).
set -uo pipefail
engines=${S3DOCK_TEST_ENGINES:-"20.10 28-graphdriver 28-containerd"}
# S3DOCK_TEST_REPORTS keeps each run's vitest JSON report (.ci/run counts them); by default a temporary folder.
reports=${S3DOCK_TEST_REPORTS:-}
if [ -z "$reports" ]; then
  reports=$(mktemp -d -t s3dock-test-XXXXXX)
  trap 'rm -rf "$reports"' EXIT
fi
failed=0

engine_host() {
  case "$1" in
    20.10) echo "${S3DOCK_TEST_DOCKER_20_10:-unix:///var/run/docker.sock}" ;;
    28-graphdriver) echo "${S3DOCK_TEST_DOCKER_28_GRAPHDRIVER:?start the engines with scripts/test-infra.sh up}" ;;
    28-containerd) echo "${S3DOCK_TEST_DOCKER_28_CONTAINERD:?start the engines with scripts/test-infra.sh up}" ;;
    *) echo "unknown engine '$1' in S3DOCK_TEST_ENGINES (20.10, 28-graphdriver, 28-containerd)" >&2; exit 2 ;;
  esac
}

run() {
  local name=$1
  shift
  printf '\n==== %s ====\n' "$name"
  vitest run "$@" --passWithNoTests --reporter=default --reporter=json --outputFile.json="$reports/$name.json" || failed=1
}

# Files that test the bucket protocol (faults, races, crashes, configuration, secrets) rather than
# what an engine does with an image: they run against the first engine only.
bucket_only="config-input secrets network-faults cleanup-races cleanup-scale clock-skew push-races listing faults crash concurrency"

run unit --project unit "$@"
count=0
for engine in $engines; do
  host=$(engine_host "$engine") || exit 2
  excludes=()
  if [ "$count" -gt 0 ]; then for file in $bucket_only; do excludes+=(--exclude "test/integration/$file.test.ts"); done; fi
  DOCKER_HOST=$host S3DOCK_TEST_ENGINE=$engine run "integration on Docker $engine" --project integration "${excludes[@]}" "$@"
  count=$((count + 1))
done
if [ "$count" -gt 1 ]; then
  export S3DOCK_TEST_ENGINES="$engines"
  for engine in $engines; do
    var="S3DOCK_TEST_DOCKER_$(echo "$engine" | tr 'a-z.-' 'A-Z__')"
    export "$var=$(engine_host "$engine")"
  done
  run "cross-engine" --project cross-engine "$@"
fi

node -e '
  const fs = require("node:fs");
  let passed = 0, failedTests = 0, skipped = 0, missing = 0;
  for (const file of fs.readdirSync(process.argv[1])) {
    try {
      const r = JSON.parse(fs.readFileSync(`${process.argv[1]}/${file}`, "utf8"));
      passed += r.numPassedTests; failedTests += r.numFailedTests; skipped += (r.numPendingTests ?? 0) + (r.numTodoTests ?? 0);
    } catch { missing++; }
  }
  if (missing) console.log(`${missing} test run(s) wrote no report`);
  console.log(`${passed} passed, ${failedTests} failed, ${skipped} skipped`);
' "$reports"
exit "$failed"
