import { defineConfig } from "vitest/config";

// `vitest run --project unit` needs nothing outside the process; `--project integration` needs a
// Docker engine (DOCKER_HOST) and an S3 server (scripts/test-infra.sh up, then the S3DOCK_TEST_*
// variables it prints); `--project cross-engine` needs every engine at once (scripts/test.sh runs it);
// `--project dist` needs the engine, the S3 server and the release files, image and package (make test-dist).
const serverTests = { testTimeout: 300_000, hookTimeout: 300_000, fileParallelism: false };
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "unit",
          include: ["test/unit/**/*.test.ts"],
        },
      },
      {
        test: {
          name: "integration",
          include: ["test/integration/**/*.test.ts"],
          // One file at a time: the files share one Docker engine and one S3 server.
          ...serverTests,
        },
      },
      {
        test: {
          name: "cross-engine",
          include: ["test/cross-engine/**/*.test.ts"],
          ...serverTests,
        },
      },
      {
        test: {
          name: "dist",
          include: ["test/dist/**/*.test.ts"],
          ...serverTests,
        },
      },
    ],
  },
});
