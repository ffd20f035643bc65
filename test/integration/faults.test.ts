/**
 * Transient faults are retried, permanent ones are one clear line and exit 1. The faults are real:
 * gateway B (a second radosgw over the same cluster) is killed and restarted mid-transfer, or its
 * port is firewalled with iptables; the Docker socket, the bucket and the secret key are wrong.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HeadObjectCommand, ListMultipartUploadsCommand } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  CLI,
  NODE,
  buildImage,
  cliEnv,
  configDigest,
  createAppRepo,
  createBucket,
  deleteBucket,
  docker,
  errorLines,
  getText,
  imageExists,
  listKeys,
  removeAppImages,
  removeDir,
  runS3dock,
  s3,
  uniqueName,
  type AppRepo,
  type RunResult,
} from "./harness.js";
import { GATEWAY_B_ENDPOINT, dropGatewayB, gatewayB, iptablesUsable, sleep, smallEngine, undropGatewayB } from "./fault-server.js";

const APP = uniqueName("faults");
/** Enough for several seconds of outage under the SDK's jittered exponential backoff. */
const RETRY_COUNT = 10;

let bucket: string;
let repo: AppRepo;
let image: string;
let configDir: string;
/** The CLI pointed at gateway B with defaults.retry_count from a config file. */
let envB: Record<string, string>;

/** One range at a time stretches a pull over more of the fault window; pushes keep the defaults. */
function configWithRetries(retryCount: number, concurrency?: number): string {
  const file = join(configDir, `retry-${retryCount}-${concurrency ?? "default"}.json5`);
  const transfer = concurrency ? `, transfer: { concurrency: ${concurrency} }` : "";
  writeFileSync(file, `// written by faults.test.ts\n{ defaults: { retry_count: ${retryCount} }${transfer} }\n`);
  return file;
}

/** Runs the CLI in the background so the test can break things while it works. */
function startCli(args: string[], env: Record<string, string>): { done: Promise<RunResult>; running: () => boolean } {
  const child = spawn(NODE, [CLI, ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  let exited = false;
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const done = new Promise<RunResult>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code) => {
      exited = true;
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
  return { done, running: () => !exited };
}

/** Waits until the push has an open multipart upload on the server: the transfer is under way. */
async function waitForUploadInFlight(timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const pending = await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: `images/${APP}/` }));
    if ((pending.Uploads?.length ?? 0) > 0) return true;
    await sleep(100);
  }
  return false;
}

/** No metadata in the bucket without its whole object. */
async function expectNoMetadataWithoutObject(): Promise<void> {
  const keys = await listKeys(bucket, `images/${APP}/`);
  for (const metadataKey of keys.filter((key) => key.endsWith(".json"))) {
    const metadata = JSON.parse(await getText(bucket, metadataKey)) as { size: number };
    const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: metadataKey.replace(/\.json$/, ".tar.gz") }));
    expect(head.ContentLength, `${metadataKey} without its whole object`).toBe(metadata.size);
  }
}

function startPullWithConfig(config: string): ReturnType<typeof startCli> {
  // Without the local copy the engine really loads what was downloaded.
  if (imageExists(image)) docker(["rmi", image]);
  return startCli(["--config", config, "pull", APP, image.split(":")[1]!], envB);
}

async function expectLoadedAndVerified(result: RunResult): Promise<void> {
  expect(result.code, result.stderr).toBe(0);
  const metadataKey = (await listKeys(bucket, `images/${APP}/`)).find((key) => key.endsWith(".json"))!;
  const metadata = JSON.parse(await getText(bucket, metadataKey)) as { image_id: string };
  expect(await configDigest(image)).toBe(metadata.image_id);
}

beforeAll(async () => {
  gatewayB.start();
  bucket = await createBucket("s3dock-faults");
  configDir = mkdtempSync(join(tmpdir(), "s3dock-faults-"));
  envB = cliEnv(bucket, { AWS_ENDPOINT_URL: GATEWAY_B_ENDPOINT });
  // 110 MB of random bytes made inside the build (a small context builds fast); they do not compress.
  repo = createAppRepo({ dockerfileExtra: 'RUN ["/bin/busybox", "dd", "if=/dev/urandom", "of=/data/random.bin", "bs=1M", "count=110"]' });
  image = await buildImage(APP, repo, envB);
});

afterAll(async () => {
  undropGatewayB();
  gatewayB.start();
  if (bucket) await deleteBucket(bucket);
  removeAppImages(APP);
  if (repo) removeDir(repo.dir);
  if (configDir) removeDir(configDir);
});

const downloadUnderWay = (ms: number) => () => sleep(ms);

/** Runs `args`, kills gateway B once the transfer is under way, restarts it `outageMs` later. */
async function throughGatewayRestart(start: () => ReturnType<typeof startCli>, underWay: () => Promise<unknown>, outageMs: number): Promise<RunResult> {
  const run = start();
  await underWay();
  const stoppedWhileRunning = run.running();
  gatewayB.stop();
  await sleep(outageMs);
  gatewayB.start();
  const result = await run.done;
  expect(stoppedWhileRunning, `the command finished before the fault:\n${result.stderr}`).toBe(true);
  return result;
}

const uploadUnderWay = async () => {
  expect(await waitForUploadInFlight(60_000), "the push never started its upload").toBe(true);
  await sleep(500);
};

describe("transient faults are retried", () => {
  it("control: with retry_count 0 a gateway restart mid-push fails cleanly, leaving nothing visible", async () => {
    const result = await throughGatewayRestart(() => startCli(["--config", configWithRetries(0), "push", image], envB), uploadUnderWay, 1500);
    expect(result.code, result.stderr).toBe(1);
    expect(result.stderr).toMatch(/^s3dock: cannot (reach the S3 endpoint|upload)/m);
    expect((await listKeys(bucket, `images/${APP}/`)).filter((key) => key.endsWith(".json"))).toEqual([]);
    expect((await runS3dock(["list", "images", APP], { env: envB })).stdout).not.toContain(image);
  });

  it(`push survives gateway B being killed mid-upload and restarted 3 s later (retry_count ${RETRY_COUNT})`, async () => {
    const result = await throughGatewayRestart(() => startCli(["--config", configWithRetries(RETRY_COUNT), "push", image], envB), uploadUnderWay, 3000);
    expect(result.code, result.stderr).toBe(0);
    await expectNoMetadataWithoutObject();
    expect((await runS3dock(["list", "images", APP], { env: envB })).stdout).toContain(image);
  });

  it("control: with retry_count 0 a gateway restart mid-pull fails cleanly and loads nothing", async () => {
    // A fast machine can finish the download before the kill lands; then the kill missed, and an
    // earlier one is tried. Any kill that lands must fail the pull cleanly.
    let result: RunResult | undefined;
    for (const delayMs of [800, 500, 300, 150]) {
      result = await throughGatewayRestart(() => startPullWithConfig(configWithRetries(0, 1)), downloadUnderWay(delayMs), 1500);
      if (result.code !== 0) break;
    }
    result = result!;
    expect(result.code, result.stderr).toBe(1);
    expect(result.stderr).toMatch(/^s3dock: cannot (reach the S3 endpoint|download)/m);
    expect(imageExists(image)).toBe(false);
  });

  it(`pull survives gateway B being killed mid-download and restarted 3 s later (retry_count ${RETRY_COUNT}); the loaded image is verified`, async () => {
    const result = await throughGatewayRestart(() => startPullWithConfig(configWithRetries(RETRY_COUNT, 1)), downloadUnderWay(500), 3000);
    await expectLoadedAndVerified(result);
  });

  it.runIf(iptablesUsable())("pull recovers when gateway B's port drops every packet for 4 s", async () => {
    const pull = startPullWithConfig(configWithRetries(RETRY_COUNT, 1));
    await downloadUnderWay(1000)();
    const droppedWhileRunning = pull.running();
    try {
      dropGatewayB();
      await sleep(4000);
    } finally {
      undropGatewayB();
    }
    const result = await pull.done;
    expect(droppedWhileRunning, "the pull finished before the fault").toBe(true);
    await expectLoadedAndVerified(result);
  });
});

describe("permanent faults are one clear line and exit 1", () => {
  it("with retry_count 0 and gateway B down: cannot reach the S3 endpoint", async () => {
    gatewayB.stop();
    try {
      const started = Date.now();
      const result = await runS3dock(["--config", configWithRetries(0), "list", "images", APP], { env: envB });
      expect(result.code).toBe(1);
      expect(result.stderr).toMatch(/^s3dock: cannot reach the S3 endpoint .*check the endpoint and the network$/m);
      expect(Date.now() - started).toBeLessThan(15_000);
    } finally {
      gatewayB.start();
    }
  });

  it("Docker engine unreachable", async () => {
    const result = await runS3dock(["push", image], { env: cliEnv(bucket, { DOCKER_HOST: "unix:///nonexistent.sock" }) });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^s3dock: cannot reach the Docker engine at unix:\/\/\/nonexistent\.sock/m);
  });

  it("bucket missing", async () => {
    const missing = uniqueName("s3dock-missing");
    const result = await runS3dock(["list", "images", APP], { env: cliEnv(missing) });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`s3dock: bucket ${missing} does not exist`);
  });

  it("wrong secret key: access denied", async () => {
    const result = await runS3dock(["list", "images", APP], { env: cliEnv(bucket, { AWS_SECRET_ACCESS_KEY: "not-the-secret-key" }) });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^s3dock: access denied: cannot .*SignatureDoesNotMatch/m);
  });

  it("disk full during docker load: one clear line, exit 1, nothing loaded, no pull recorded", async () => {
    const env = cliEnv(bucket);
    const pushed = await runS3dock(["push", image], { env });
    expect(pushed.code, pushed.stderr).toBe(0);
    // The image is 110 MB of random bytes; the small engine's whole data-root is 64 MiB.
    const smallHost = smallEngine.up();
    try {
      const pullEvents = async () => (await listKeys(bucket, `audit/${APP}/`)).filter((key) => key.includes("-pull-"));
      const auditBefore = await pullEvents();
      const result = await runS3dock(["pull", APP, image.split(":")[1]!], { env: { ...env, DOCKER_HOST: smallHost } });
      expect(result.code).toBe(1);
      expect(errorLines(result.stderr)).toHaveLength(1);
      expect(result.stderr).toMatch(/^s3dock: the Docker engine at unix:\/\/\S+ ran out of disk space while loading the image: free space in its data root .*no space left on device/m);
      expect(docker(["--host", smallHost, "images", "--quiet"])).toBe("");
      expect(await pullEvents()).toEqual(auditBefore);
    } finally {
      smallEngine.down();
    }
  });
});
