/**
 * The layers storage format on the engine under test: only changed layers cross the wire each way,
 * two apps on one base store it once, a tampered blob is refused, and two pushes sharing new layers at
 * once both succeed with every blob intact.
 */
import { createHash, randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type AppRepo,
  cliEnv,
  createAppRepo,
  createBucket,
  deleteBucket,
  docker,
  dockerBuild,
  errorLines,
  getBytes,
  getText,
  imageExists,
  listKeys,
  putObject,
  removeAppImages,
  removeDir,
  removeImage,
  runJson,
  s3,
  uniqueName,
} from "./harness.js";
import { DeleteObjectCommand, ListObjectsV2Command } from "@aws-sdk/client-s3";

const app = uniqueName("layers");
const other = uniqueName("layers-other");
const BASE_BYTES = 6 * 1024 * 1024;
const baseImage = `${uniqueName("layers-base")}:1`;
const newBaseImage = `${uniqueName("layers-base")}:2`;
let bucket: string;
let env: Record<string, string>;
let repo: AppRepo;
let otherRepo: AppRepo;
const images: string[] = [];

const json = (args: string[], extra: Record<string, string> = {}) => runJson(args, { env: { ...env, ...extra } });
const tagOf = (image: string) => image.slice(image.indexOf(":") + 1);

async function bucketBytes(prefix = ""): Promise<number> {
  let total = 0;
  let token: string | undefined;
  do {
    const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
    for (const object of page.Contents ?? []) total += object.Size ?? 0;
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return total;
}

/** A repo whose image is a small app layer on top of a local base image (the same base for both apps). */
function layeredRepo(base: string): AppRepo {
  const made = createAppRepo();
  made.commit("Dockerfile", appDockerfile(base));
  made.commit("app.txt", "version 1\n");
  return made;
}

const appDockerfile = (base: string) => `FROM ${base}\nCOPY app.txt /app.txt\nCMD ["/bin/busybox", "cat", "/app.txt"]\n`;

async function build(name: string, from: AppRepo): Promise<string> {
  const result = await runJson(["build", name], { env, cwd: from.dir });
  expect(result.code, result.stderr).toBe(0);
  images.push(result.doc.data.image_tag);
  return result.doc.data.image_tag as string;
}

beforeAll(async () => {
  bucket = await createBucket("s3dock-layers");
  env = cliEnv(bucket, { S3DOCK_STORAGE_FORMAT: "layers" });
  dockerBuild(baseImage, { "base.bin": randomBytes(BASE_BYTES).toString("base64") });
  repo = layeredRepo(baseImage);
  otherRepo = layeredRepo(baseImage);
}, 300_000);

afterAll(async () => {
  removeAppImages(app);
  removeAppImages(other);
  removeImage(baseImage);
  removeImage(newBaseImage);
  for (const made of [repo, otherRepo]) if (made) removeDir(made.dir);
  if (bucket) await deleteBucket(bucket);
}, 300_000);

describe("layers format", () => {
  let v1: string;
  let v2: string;

  it("pushes every layer once, then only the changed one", async () => {
    v1 = await build(app, repo);
    const first = await json(["push", v1]);
    expect(first.code, first.stderr).toBe(0);
    expect(first.doc.data).toMatchObject({ format: "layers", skipped: false, layers_reused: 0 });
    expect(await listKeys(bucket, "blobs/sha256/")).not.toHaveLength(0);

    repo.commit("app.txt", "version 2\n");
    v2 = await build(app, repo);
    const before = await bucketBytes("blobs/");
    const second = await json(["push", v2]);
    expect(second.code, second.stderr).toBe(0);
    expect(second.doc.data).toMatchObject({ format: "layers", skipped: false, layers_uploaded: 1 });
    expect(second.doc.data.layers_reused).toBeGreaterThan(0);
    const added = (await bucketBytes("blobs/")) - before;
    // The new layer plus a config and a manifest: kilobytes, not the base's megabytes.
    expect(added).toBeLessThan(64 * 1024);
    expect(second.doc.data.bytes_uploaded).toBeLessThan(64 * 1024);

    const metadata = JSON.parse(await getText(bucket, second.doc.data.s3_key.replace(/\.tar\.gz$/, ".json")));
    expect(metadata).toMatchObject({ format: "layers", image_tag: v2, app_name: app });
    expect(metadata.manifest_digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(await listKeys(bucket, `images/${app}/`)).toContain(second.doc.data.s3_key);
  });

  it("pulls only the changed layer into an engine that has the previous version, and the image runs", async () => {
    // v1 as a host has it: pulled from the bucket (the containerd store knows which blobs it holds only for those).
    removeImage(v1);
    removeImage(v2);
    const first = await json(["pull", app, tagOf(v1)]);
    expect(first.code, first.stderr).toBe(0);
    const pulled = await json(["--log-level", "3", "pull", app, tagOf(v2)]);
    expect(pulled.code, pulled.stderr).toBe(0);
    expect(pulled.doc.data).toMatchObject({ image_ref: v2, skipped: false });
    expect(pulled.stderr).toMatch(/loading 1 of \d+ layers \(the engine has the others\)/);
    expect(docker(["run", "--rm", v2])).toBe("version 2");

    const again = await json(["pull", app, tagOf(v2)]);
    expect(again.doc.data.skipped).toBe(true);
  });

  it("stores a base two apps share once", async () => {
    const before = await bucketBytes("blobs/");
    const otherImage = await build(other, otherRepo);
    const pushed = await json(["push", otherImage]);
    expect(pushed.code, pushed.stderr).toBe(0);
    expect(pushed.doc.data.layers_reused).toBeGreaterThan(0);
    expect((await bucketBytes("blobs/")) - before).toBeLessThan(BASE_BYTES / 4);
  });

  it("refuses a tampered layer blob and leaves nothing in the engine", async () => {
    const metadata = JSON.parse(await getText(bucket, (await listKeys(bucket, `images/${app}/`)).find((key) => key.includes(tagOf(v2)) && key.endsWith(".json"))!));
    const manifest = JSON.parse((await getBytes(bucket, `blobs/sha256/${metadata.manifest_digest.slice(7)}`)).toString("utf8"));
    const top = manifest.layers.at(-1);
    const key = `blobs/sha256/${top.digest.slice(7)}`;
    const original = await getBytes(bucket, key);
    const altered = Buffer.from(original);
    const middle = Math.floor(altered.length / 2);
    altered[middle] = altered[middle]! ^ 0xff;
    expect(createHash("sha256").update(altered).digest("hex")).not.toBe(top.digest.slice(7));
    await putObject(bucket, key, altered);
    try {
      removeImage(v2);
      const result = await json(["pull", app, tagOf(v2)]);
      expect(result.code).toBe(1);
      expect(errorLines(result.stderr), result.stderr).toHaveLength(1);
      expect(result.stderr).toMatch(/does not match its digest/);
      expect(imageExists(v2)).toBe(false);
    } finally {
      await putObject(bucket, key, original);
    }
  });

  it("pulls every layer the engine lacks once the base is gone from it", async () => {
    removeImage(v1);
    removeImage(v2);
    removeAppImages(other);
    removeImage(baseImage);
    const pulled = await json(["--log-level", "3", "pull", app, tagOf(v1)]);
    expect(pulled.code, pulled.stderr).toBe(0);
    // Every test image starts with the same busybox layer, which other images in the engine share.
    const [, loaded, total] = /loading (\d+) of (\d+) layers/.exec(pulled.stderr)!.map(Number);
    expect(loaded).toBeGreaterThanOrEqual(total! - 1);
    expect(docker(["run", "--rm", v1])).toBe("version 1");
  });

  it("two pushes sharing a new layer at once both succeed, and every blob matches its address", async () => {
    dockerBuild(newBaseImage, { "base.bin": randomBytes(BASE_BYTES).toString("base64") });
    repo.commit("Dockerfile", appDockerfile(newBaseImage));
    const a = await build(app, repo);
    otherRepo.commit("Dockerfile", appDockerfile(newBaseImage));
    const b = await build(other, otherRepo);
    const [first, second] = await Promise.all([json(["push", a]), json(["push", b])]);
    expect(first.code, first.stderr).toBe(0);
    expect(second.code, second.stderr).toBe(0);
    for (const key of await listKeys(bucket, "blobs/sha256/")) {
      expect(createHash("sha256").update(await getBytes(bucket, key)).digest("hex")).toBe(key.slice("blobs/sha256/".length));
    }
    expect(await listKeys(bucket, "blobs/uploads/")).toEqual([]);
    for (const [name, image] of [[app, a], [other, b]] as const) {
      removeImage(image);
      const pulled = await json(["pull", name, tagOf(image)]);
      expect(pulled.code, pulled.stderr).toBe(0);
    }
  });

  it("keeps pushing the Go-compatible archive with --format archive", async () => {
    repo.commit("app.txt", "archived\n");
    const image = await build(app, repo);
    const pushed = await json(["push", "--format", "archive", image]);
    expect(pushed.code, pushed.stderr).toBe(0);
    expect(pushed.doc.data.format).toBe("archive");
    expect((await getBytes(bucket, pushed.doc.data.s3_key)).length).toBeGreaterThan(BASE_BYTES / 2);
    removeImage(image);
    const pulled = await json(["pull", app, tagOf(image)]);
    expect(pulled.code, pulled.stderr).toBe(0);
  });
});

describe("garbage collection of blobs", () => {
  const blobExists = async (digest: string) => (await listKeys(bucket, `blobs/sha256/${digest.slice(7)}`)).length === 1;
  async function storedImage(image: string): Promise<{ metadataKey: string; manifest: string; config: string; layers: string[]; diffIds: string[] }> {
    const name = image.slice(0, image.indexOf(":"));
    const metadataKey = (await listKeys(bucket, `images/${name}/`)).find((key) => key.endsWith(`${tagOf(image)}.json`))!;
    const metadata = JSON.parse(await getText(bucket, metadataKey));
    const manifest = JSON.parse((await getBytes(bucket, `blobs/sha256/${metadata.manifest_digest.slice(7)}`)).toString("utf8"));
    return { metadataKey, manifest: metadata.manifest_digest, config: manifest.config.digest, layers: manifest.layers.map((layer: { digest: string }) => layer.digest), diffIds: metadata.layers };
  }
  const cleanup = (name: string, ...extra: string[]) => json(["cleanup", "remote", name, "--older-than", "0s", "--keep", "0", "--blob-grace", "0s", ...extra]);

  it("cleanup remote deletes an unreferenced image's own blobs after the image, and keeps those other images need", async () => {
    const gcApp = uniqueName("layers-gc");
    const gcRepo = layeredRepo(newBaseImage);
    try {
      gcRepo.commit("app.txt", `only in ${gcApp}\n`);
      const image = await build(gcApp, gcRepo);
      expect((await json(["push", image])).code).toBe(0);
      const stored = await storedImage(image);
      const own = [stored.manifest, stored.config, stored.layers.at(-1)!];
      const shared = stored.layers.slice(0, -1);

      const dry = await cleanup(gcApp);
      expect(dry.code, dry.stderr).toBe(0);
      for (const digest of [...own, ...shared]) expect(await blobExists(digest)).toBe(true);

      const done = await cleanup(gcApp, "--yes");
      expect(done.code, done.stderr).toBe(0);
      expect(done.doc.data.deleted.map((candidate: { image: string }) => candidate.image)).toEqual([image]);
      expect(done.doc.data.blobs.deleted).toBeGreaterThanOrEqual(own.length);
      expect(done.doc.data.blobs.bytes_freed).toBeGreaterThan(0);
      for (const digest of own) expect(await blobExists(digest)).toBe(false);
      for (const digest of shared) expect(await blobExists(digest)).toBe(true);
      expect(await listKeys(bucket, `layers/sha256/${stored.diffIds.at(-1)!.slice(7)}.json`)).toEqual([]);
    } finally {
      removeAppImages(gcApp);
      removeDir(gcRepo.dir);
    }
  });

  it("keeps the layers a push under way has claimed", async () => {
    const gcApp = uniqueName("layers-gc");
    const gcRepo = layeredRepo(newBaseImage);
    try {
      gcRepo.commit("app.txt", `claimed by ${gcApp}\n`);
      const image = await build(gcApp, gcRepo);
      expect((await json(["push", image])).code).toBe(0);
      const stored = await storedImage(image);
      // The image is gone (a cleanup), and a push of an image with the same layers has claimed its name.
      await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: stored.metadataKey }));
      const claimKey = `.s3dock/push-claims/${gcApp}/${gcApp}-${tagOf(image)}.json`;
      const claim = { image_tag: image, image_id: stored.config, layers: stored.diffIds, claimed_by: "test", claimed_at: new Date().toISOString(), write_id: "x" };
      await putObject(bucket, claimKey, JSON.stringify(claim));
      const kept = await cleanup(gcApp, "--yes");
      expect(kept.code, kept.stderr).toBe(0);
      expect(await blobExists(stored.layers.at(-1)!)).toBe(true);
      expect(await blobExists(stored.manifest)).toBe(false);

      await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: claimKey }));
      const swept = await cleanup(gcApp, "--yes");
      expect(swept.code, swept.stderr).toBe(0);
      expect(await blobExists(stored.layers.at(-1)!)).toBe(false);
    } finally {
      removeAppImages(gcApp);
      removeDir(gcRepo.dir);
    }
  });
});
