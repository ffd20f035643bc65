/**
 * What the configuration may point at, through the built CLI: only a regular file of sane size is
 * read as a config file (a device, a FIFO, a directory or a huge file is one clear line and exit 2,
 * at once), and credentials written into an endpoint URL are redacted wherever s3dock prints.
 */
import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLI, NODE, cliEnv, createBucket, deleteBucket, errorLines, removeDir, s3Settings, type RunResult } from "./harness.js";

let dir: string;
let bucket: string;

/** Runs the CLI, killing it after `timeoutMs` (a config read that hangs must fail the test, not stall it). */
function runBounded(args: string[], env: Record<string, string>, cwd = dir, timeoutMs = 20_000): Promise<RunResult & { killed: boolean }> {
  return new Promise((resolve, reject) => {
    const child = spawn(NODE, [CLI, ...args], { env, cwd, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    let killed = false;
    const timer = setTimeout(() => {
      killed = true;
      child.kill("SIGKILL");
    }, timeoutMs);
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr, killed });
    });
  });
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "s3dock-config-input-"));
  bucket = await createBucket("s3dock-config-input");
});

afterAll(async () => {
  if (dir) removeDir(dir);
  if (bucket) await deleteBucket(bucket);
});

describe("--config reads only a regular file of sane size", () => {
  const cases: [string, () => string, RegExp][] = [
    ["a character device (/dev/zero)", () => "/dev/zero", /^s3dock: config file \/dev\/zero is a device: give a regular file$/],
    [
      "a FIFO with no writer",
      () => {
        const fifo = join(dir, "config.fifo");
        execFileSync("mkfifo", [fifo]);
        return fifo;
      },
      /^s3dock: config file .*config\.fifo is a FIFO: give a regular file$/,
    ],
    [
      "a directory",
      () => {
        const sub = join(dir, "a-directory");
        mkdirSync(sub);
        return sub;
      },
      /^s3dock: config file .*a-directory is a directory: give a regular file$/,
    ],
    [
      "a 50 MB file",
      () => {
        const big = join(dir, "big.json5");
        writeFileSync(big, "{}");
        truncateSync(big, 50 * 1024 * 1024);
        return big;
      },
      /^s3dock: config file .*big\.json5 is larger than 1024 KiB: that is not an s3dock config file$/,
    ],
  ];

  it.each(cases)("refuses %s with one line and exit 2", async (_, make, message) => {
    const result = await runBounded(["--config", make(), "config", "show"], cliEnv(bucket));
    expect(result.killed).toBe(false);
    expect(result.code).toBe(2);
    expect(errorLines(result.stderr)).toHaveLength(1);
    expect(errorLines(result.stderr)[0]).toMatch(message);
    expect(result.stdout).toBe("");
  });

  it("refuses the same things where it searches (./s3dock.json5 as a FIFO), without waiting for a writer", async () => {
    const cwd = mkdtempSync(join(dir, "cwd-"));
    execFileSync("mkfifo", [join(cwd, "s3dock.json5")]);
    const child = await runBounded(["config", "show"], cliEnv(bucket), cwd);
    expect(child.killed).toBe(false);
    expect(child.code).toBe(2);
    expect(child.stderr).toMatch(/s3dock\.json5 is a FIFO: give a regular file/);
  });

  it("still reads an ordinary config file", async () => {
    const file = join(dir, "ok.json5");
    writeFileSync(file, `{ profiles: { default: { bucket: "${bucket}" } } }`);
    const result = await runBounded(["--config", file, "--json", "config", "show"], cliEnv(bucket, { S3DOCK_BUCKET: undefined }));
    expect(result.code, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout).data.bucket).toBe(bucket);
  });
});

describe("credentials in the endpoint URL are redacted like the secret key", () => {
  const PASSWORD = `endpoint-Pw-${Math.random().toString(36).slice(2, 12)}`;
  const withUserinfo = s3Settings.endpoint.replace("://", `://s3user:${PASSWORD}@`);

  it("AWS_ENDPOINT_URL: config show (text and --json) shows ***, and a real request at --log-level 3 prints it nowhere", async () => {
    const env = cliEnv(bucket, { AWS_ENDPOINT_URL: withUserinfo });
    const shown = await runBounded(["config", "show"], env);
    expect(shown.code, shown.stderr).toBe(0);
    expect(shown.stdout).toContain(`Endpoint:    ${s3Settings.endpoint.replace("://", "://***@")}`);
    const json = await runBounded(["--json", "config", "show"], env);
    expect(JSON.parse(json.stdout).data.endpoint).toBe(s3Settings.endpoint.replace("://", "://***@"));
    const listed = await runBounded(["--log-level", "3", "list", "apps"], env);
    expect(listed.code, listed.stderr).toBe(0);
    const failed = await runBounded(["--log-level", "3", "--json", "current", "nothing-here", "prod"], env);
    expect(failed.code).toBe(1);
    for (const result of [shown, json, listed, failed]) {
      expect(result.stdout + result.stderr).not.toContain(PASSWORD);
      expect(result.stdout + result.stderr).not.toContain(`s3user:`);
    }
  });

  it("a profile's endpoint in the config file, also when another profile is in use", async () => {
    const file = join(dir, "endpoint.json5");
    writeFileSync(
      file,
      JSON.stringify({
        default_profile: "main",
        profiles: { main: { bucket, endpoint: withUserinfo }, spare: { bucket, endpoint: withUserinfo.replace(PASSWORD, `${PASSWORD}-spare`) } },
      }),
    );
    const env = cliEnv(bucket, { AWS_ENDPOINT_URL: undefined });
    for (const args of [["config", "show"], ["--json", "config", "show"], ["--profile", "spare", "--log-level", "3", "current", "nothing-here", "prod"]]) {
      const result = await runBounded(["--config", file, ...args], env);
      expect(result.stdout + result.stderr).not.toContain(PASSWORD);
    }
  });
});
