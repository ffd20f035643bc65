/**
 * Crash safety: a push of a ~80 MB image is killed with SIGKILL at random moments. After every kill
 * the bucket must never show an image without its metadata or metadata without its image, no tag
 * or pointer may name a missing image, and running the push again must complete. Unfinished
 * multipart uploads left behind are then aborted by the cleanup path.
 */
import { spawn } from "node:child_process";
import { DeleteObjectCommand, HeadObjectCommand, ListMultipartUploadsCommand } from "@aws-sdk/client-s3";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DockerodeEngine } from "../../src/clients/docker.js";
import { S3ObjectStore } from "../../src/clients/object-store.js";
import { Cleaner, STALE_UPLOAD_MS } from "../../src/services/cleaner.js";
import { silentProgress } from "../../src/services/context.js";
import {
  CLI,
  NODE,
  buildImage,
  cliEnv,
  createAppRepo,
  createBucket,
  deleteBucket,
  docker,
  getText,
  imageExists,
  listKeys,
  removeAppImages,
  removeDir,
  runS3dock,
  s3,
  s3Settings,
  uniqueName,
  type AppRepo,
} from "./harness.js";

const APP = uniqueName("crash");
const STABLE_APP = uniqueName("crash-stable");
const KILLS = 10;

let bucket: string;
let env: Record<string, string>;
let repo: AppRepo;
let stableRepo: AppRepo;
let image: string;
let stableImage: string;
let normalPushMs: number;

/** Deterministic per seed, so a failing crash point can be replayed. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

async function objectSize(key: string): Promise<number | undefined> {
  try {
    return (await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }))).ContentLength;
  } catch {
    return undefined;
  }
}

/** Starts a push and SIGKILLs it after `delayMs`; resolves with how it ended. */
function pushKilledAfter(delayMs: number): Promise<{ killed: boolean; code: number | null }> {
  return new Promise((resolve, reject) => {
    const child = spawn(NODE, [CLI, "push", image], { env, stdio: "ignore" });
    const timer = setTimeout(() => child.kill("SIGKILL"), delayMs);
    child.on("error", reject);
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      resolve({ killed: signal === "SIGKILL", code });
    });
  });
}

/** Every image pair in the bucket: object and metadata both present, or the metadata absent. */
async function expectNoHalfVisibleImage(): Promise<{ visible: boolean }> {
  const keys = await listKeys(bucket, `images/${APP}/`);
  const metadataKeys = keys.filter((key) => key.endsWith(".json"));
  for (const metadataKey of metadataKeys) {
    const objectKey = metadataKey.replace(/\.json$/, ".tar.gz");
    const metadata = JSON.parse(await getText(bucket, metadataKey)) as { size: number };
    expect(await objectSize(objectKey), `${metadataKey} exists without its whole object`).toBe(metadata.size);
  }
  return { visible: metadataKeys.length > 0 };
}

/** Every tag and pointer in the bucket names an image whose object and metadata both exist. */
async function expectReferencesResolve(): Promise<void> {
  const keys = [...(await listKeys(bucket, "tags/")), ...(await listKeys(bucket, "pointers/"))];
  expect(keys.length).toBeGreaterThan(0);
  for (const key of keys) {
    const document = JSON.parse(await getText(bucket, key)) as { target_type: string; target_path: string };
    const imageKey = document.target_type === "tag" ? JSON.parse(await getText(bucket, document.target_path)).target_path : document.target_path;
    expect(await objectSize(imageKey), `${key} names ${imageKey}, which is missing`).toBeGreaterThan(0);
    expect(await objectSize(imageKey.replace(/\.tar\.gz$/, ".json")), `${key} names ${imageKey} without metadata`).toBeGreaterThan(0);
  }
}

async function deleteImagePair(): Promise<void> {
  for (const key of await listKeys(bucket, `images/${APP}/`)) {
    await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
  }
}

beforeAll(async () => {
  bucket = await createBucket("s3dock-crash");
  env = cliEnv(bucket);
  stableRepo = createAppRepo();
  stableImage = await buildImage(STABLE_APP, stableRepo, env);
  // 80 MB of random bytes made inside the build (a small context builds fast): they do not
  // compress, so about 80 MB go over the wire in 16 MiB parts.
  repo = createAppRepo({ dockerfileExtra: 'RUN ["/bin/busybox", "dd", "if=/dev/urandom", "of=/data/random.bin", "bs=1M", "count=80"]' });
  image = await buildImage(APP, repo, env);

  // The pointer and tag exist before any crash, set by completed pushes only.
  for (const args of [["push", stableImage], ["tag", stableImage, "v1.0.0"], ["promote", stableImage, "prod"]]) {
    const result = await runS3dock(args, { env });
    expect(result.code, result.stderr).toBe(0);
  }

  // How long an uninterrupted push takes here, measured in a scratch bucket.
  const scratch = await createBucket("s3dock-crash-timing");
  try {
    const started = Date.now();
    const result = await runS3dock(["push", image], { env: cliEnv(scratch) });
    expect(result.code, result.stderr).toBe(0);
    normalPushMs = Date.now() - started;
  } finally {
    await deleteBucket(scratch);
  }
});

afterAll(async () => {
  if (bucket) await deleteBucket(bucket);
  removeAppImages(APP);
  removeAppImages(STABLE_APP);
  if (repo) removeDir(repo.dir);
  if (stableRepo) removeDir(stableRepo.dir);
});

describe("push killed with SIGKILL", () => {
  const seed = Number(process.env.S3DOCK_CRASH_SEED ?? Date.now() % 1_000_000);
  const crashPoints: { delayMs: number; killed: boolean; visible: boolean }[] = [];

  it(`never leaves an image half visible, over ${KILLS} random kills (seed in the log)`, async () => {
    const random = seededRandom(seed);
    let verifiedCompletePull = false;
    for (let i = 0; i < KILLS; i++) {
      const delayMs = Math.round(50 + random() * Math.max(normalPushMs - 50, 1));
      const { killed } = await pushKilledAfter(delayMs);
      const { visible } = await expectNoHalfVisibleImage();
      crashPoints.push({ delayMs, killed, visible });
      await expectReferencesResolve();

      const listed = await runS3dock(["list", "images", APP], { env });
      expect(listed.code, listed.stderr).toBe(0);
      expect(listed.stdout.includes(image), `list images after a kill at ${delayMs} ms`).toBe(visible);

      const current = await runS3dock(["current", STABLE_APP, "prod"], { env });
      expect([current.code, current.stdout.trim()]).toEqual([0, stableImage]);

      const tag = image.split(":")[1]!;
      if (!visible) {
        // The half-written image is absent: a clean "not found", never a crash or a load of partial bytes.
        const pulled = await runS3dock(["pull", "--force", APP, tag], { env });
        expect(pulled.code).toBe(1);
        expect(pulled.stderr).toMatch(/is not in s3:\/\//);
        expect(pulled.stderr).not.toMatch(/unexpected error/);
      } else {
        if (!verifiedCompletePull) {
          // A kill after the metadata was written: the image is complete and pulls verified.
          const pulled = await runS3dock(["pull", "--force", APP, tag], { env });
          expect(pulled.code, pulled.stderr).toBe(0);
          verifiedCompletePull = true;
        }
        // Start over, so the next kill lands in an upload again.
        await deleteImagePair();
      }
    }
    console.log(`crash seed ${seed}; normal push ${normalPushMs} ms; kills: ${JSON.stringify(crashPoints)}`);
    expect(crashPoints.filter((point) => point.killed).length).toBeGreaterThanOrEqual(KILLS / 2);
  });

  it("completes when the push is run again, and the image pulls verified", async () => {
    const pushed = await runS3dock(["push", image], { env });
    expect(pushed.code, pushed.stderr).toBe(0);
    await expectNoHalfVisibleImage();
    docker(["rmi", image]);
    expect(imageExists(image)).toBe(false);
    const pulled = await runS3dock(["pull", APP, image.split(":")[1]!], { env });
    expect(pulled.code, pulled.stderr).toBe(0);
    expect(imageExists(image)).toBe(true);
  });

  it("leaves unfinished multipart uploads that cleanup remote aborts once they are stale", async () => {
    const pending = await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: `images/${APP}/` }));
    // Kills inside the upload leave the multipart upload open on the server.
    expect(pending.Uploads?.length ?? 0, `no unfinished upload after kills ${JSON.stringify(crashPoints)}`).toBeGreaterThan(0);

    // The CLI's clock cannot be moved, so the Cleaner runs here over the real store, an hour and a bit later.
    const logger = pino({ level: "silent" });
    const store = new S3ObjectStore({
      bucket,
      region: s3Settings.region,
      endpoint: s3Settings.endpoint,
      credentials: { accessKeyId: s3Settings.accessKey, secretAccessKey: s3Settings.secretKey },
      retryCount: 2,
      maxSockets: 8,
      idleTimeoutMs: 30_000,
      logger,
    });
    const later = new Date(Date.now() + STALE_UPLOAD_MS + 60_000);
    const cleaner = new Cleaner({
      store,
      docker: new DockerodeEngine({ timeoutMs: 30_000, env: process.env }),
      logger,
      clock: { now: () => later },
      storageFormat: "archive",
      user: "crash-test",
      transfer: { partSizeBytes: 16 * 1024 * 1024, concurrency: 4, chunkSizeBytes: 4 * 1024 * 1024, compressionWorkers: 2, gzipLevel: 1, maxImageBytesWithoutSize: 1 << 30 },
      retryCount: 2,
      progress: silentProgress,
      toolVersion: "s3dock/test",
      uniqueId: () => Math.random().toString(16).slice(2, 10),
    });
    const result = await cleaner.remote(APP, { olderThanMs: 365 * 24 * 3600 * 1000, keep: 100, yes: true });
    expect(result.stale_uploads.length).toBe(pending.Uploads!.length);
    const after = await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: `images/${APP}/` }));
    expect(after.Uploads ?? []).toHaveLength(0);
    // The completed image was not touched.
    await expectNoHalfVisibleImage();
    expect((await runS3dock(["list", "images", APP], { env })).stdout).toContain(image);
  });
});
