import { defineConfig } from "vitest/config";

// `vitest run --project unit` needs nothing outside the process; `--project integration` needs a
// Docker engine and an S3 server (scripts/test-infra.sh up, then the S3DOCK_TEST_* variables it prints);
// `--project dist` needs those and the release files, image and package (make test-dist).
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
          testTimeout: 300_000,
          hookTimeout: 300_000,
          // One file at a time: the files share one Docker engine and one S3 server.
          fileParallelism: false,
        },
      },
      {
        test: {
          name: "dist",
          include: ["test/dist/**/*.test.ts"],
          testTimeout: 300_000,
          hookTimeout: 300_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
