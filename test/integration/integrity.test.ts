/**
 * Bytes and documents in the bucket that are not what they claim: an object with flipped bytes of
 * the same length, a truncated object, and unreadable JSON in a pointer, a tag and metadata. Pull
 * must refuse with a clear integrity message and leave nothing in the engine; commands that meet
 * garbage fail with one line and write nothing.
 */
import { createHash } from "node:crypto";
import { gunzipSync, gzipSync } from "node:zlib";
import tarStream from "tar-stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type AppRepo,
  buildImage,
  cliEnv,
  createAppRepo,
  createBucket,
  deleteBucket,
  docker,
  errorLines,
  getBytes,
  getText,
  imageExists,
  imageId,
  listKeys,
  md5Hex,
  putObject,
  removeAppImages,
  removeDir,
  removeImage,
  runJson,
  runS3dock,
  tarEntries,
  uniqueName,
} from "./harness.js";

const app = uniqueName("integrity");
let bucket: string;
let env: Record<string, string>;
let repo: AppRepo;
let ref: string;
let id: string;
let key: string;
let original: Buffer;

const run = (args: string[]) => runS3dock(args, { env });

/** Pull must fail, say why, and leave neither the tag nor the image ID in the engine. */
async function expectRefusedPull(message: RegExp): Promise<void> {
  removeImage(ref);
  const before = await listKeys(bucket);
  const result = await runJson(["pull", app, "production"], { env });
  expect(result.code).toBe(1);
  expect(result.doc).toMatchObject({ success: false, command: "pull", error_type: "integrity" });
  expect(errorLines(result.stderr)).toHaveLength(1);
  expect(result.stderr).toMatch(message);
  expect(imageExists(ref)).toBe(false);
  expect(() => imageId(id)).toThrow();
  expect(await listKeys(bucket)).toEqual(before);
}

beforeAll(async () => {
  bucket = await createBucket("s3dock-integrity");
  env = cliEnv(bucket);
  // Incompressible payload: the object is several MiB, well past the bytes pull holds back.
  repo = createAppRepo({ randomBytes: 4 * 1024 * 1024 });
  ref = await buildImage(app, repo, env);
  id = imageId(ref);
  const pushed = await runJson(["push", ref], { env });
  expect(pushed.code, pushed.stderr).toBe(0);
  key = pushed.doc.data.s3_key;
  expect((await run(["promote", ref, "production"])).code).toBe(0);
  original = await getBytes(bucket, key);
});

afterAll(async () => {
  removeAppImages(app);
  if (bucket) await deleteBucket(bucket);
  if (repo) removeDir(repo.dir);
});

describe("integrity", () => {
  it("refuses an object with altered bytes of the same length", async () => {
    const altered = Buffer.from(original);
    const middle = Math.floor(altered.length / 2);
    for (let i = middle; i < middle + 64; i++) altered[i] = altered[i]! ^ 0x5a;
    await putObject(bucket, key, altered);
    // While the engine has the image, pull skips without downloading: the bad bytes go unnoticed.
    const present = await runJson(["pull", app, "production"], { env });
    expect(present.code, present.stderr).toBe(0);
    expect(present.doc.data).toMatchObject({ image_ref: ref, skipped: true });
    await expectRefusedPull(/does not match its metadata|not a valid image archive/);
  });

  it("refuses a truncated object", async () => {
    await putObject(bucket, key, original.subarray(0, Math.floor(original.length * 0.7)));
    await expectRefusedPull(new RegExp(`is ${Math.floor(original.length * 0.7)} bytes but its metadata records ${original.length}`));
  });

  it("loads the image again once the object is intact (the refusals were about the bytes)", async () => {
    await putObject(bucket, key, original);
    removeImage(ref);
    const result = await runJson(["pull", app, "production"], { env });
    expect(result.code, result.stderr).toBe(0);
    expect(imageId(ref)).toBe(id);
  });

  it("refuses an archive missing a layer, with metadata a bucket writer made to match, and leaves no image behind", async () => {
    // The containerd image store loads such an archive "successfully" and keeps a broken image record;
    // the graphdriver stores refuse it. Either way pull fails and the engine has no image under the name.
    const entries = await tarEntries(gunzipSync(original));
    const layers = (JSON.parse(entries.find((entry) => entry.name === "manifest.json")!.body.toString("utf8")) as { Layers: string[] }[])[0]!.Layers;
    const payload = entries.filter((entry) => layers.includes(entry.name)).sort((a, b) => b.body.length - a.body.length)[0]!;
    const pack = tarStream.pack();
    for (const entry of entries.filter((candidate) => candidate !== payload)) pack.entry({ name: entry.name, mtime: entry.mtime }, entry.body);
    pack.finalize();
    const parts: Buffer[] = [];
    for await (const part of pack as AsyncIterable<Buffer>) parts.push(part);
    const partialTar = Buffer.concat(parts);
    const partial = gzipSync(partialTar);
    const metadataKey = key.replace(/\.tar\.gz$/, ".json");
    const metadata = await getText(bucket, metadataKey);
    const forged = { ...JSON.parse(metadata), size: partial.length, checksum: md5Hex(partial), sha256: createHash("sha256").update(partial).digest("hex"), uncompressed_size: partialTar.length };
    delete forged.object_etag;
    await putObject(bucket, key, partial);
    await putObject(bucket, metadataKey, JSON.stringify(forged, null, 2));
    try {
      removeImage(ref);
      const result = await runJson(["pull", app, "production"], { env });
      if (result.code === 0) {
        // The containerd store may still hold the layer's snapshot after docker rmi, and unpacks from it: the image is then whole.
        expect(docker(["run", "--rm", "--entrypoint", "/bin/busybox", ref, "cat", "/www/index.html"])).toBe("hello from s3dock");
      } else {
        expect(result.code).toBe(1);
        expect(errorLines(result.stderr), result.stderr).toHaveLength(1);
        expect(imageExists(ref)).toBe(false);
      }
    } finally {
      await putObject(bucket, key, original);
      await putObject(bucket, metadataKey, metadata);
    }
    // The tests after this one start from the image in the engine.
    const restored = await runJson(["pull", app, "production"], { env });
    expect(restored.code, restored.stderr).toBe(0);
  });

  it("fails on unreadable JSON in a pointer, a tag or metadata with one line and no write", async () => {
    await putObject(bucket, `pointers/${app}/broken.json`, "{ this is not json");
    await putObject(bucket, `tags/${app}/v6.6.6.json`, '{"target_type": "image"}');
    const before = await listKeys(bucket);
    for (const args of [
      ["current", app, "broken"],
      ["pull", app, "broken"],
      ["list", "tag-for", app, "broken"],
      ["pull", app, "v6.6.6"],
      ["promote", app, "v6.6.6", "qa"],
    ]) {
      const result = await run(args);
      expect({ args, code: result.code }).toEqual({ args, code: 1 });
      expect(errorLines(result.stderr), result.stderr).toHaveLength(1);
      expect(result.stderr).toMatch(/(broken|v6\.6\.6)\.json is not (valid JSON|a valid s3dock document)/);
    }

    const metadataKey = key.replace(/\.tar\.gz$/, ".json");
    const metadata = await getText(bucket, metadataKey);
    await putObject(bucket, metadataKey, metadata.replace(/"checksum": "[0-9a-f]+"/, '"checksum": "not-a-digest"'));
    const push = await run(["push", ref]);
    expect(push.code).toBe(1);
    expect(push.stderr).toMatch(/is not a valid s3dock document: checksum/);
    expect(await listKeys(bucket)).toEqual(before);
    await putObject(bucket, metadataKey, metadata);
  });

  it("lists the readable entries around an unreadable one, as Go's list skips it, and warns", async () => {
    const envs = await run(["list", "envs", app]);
    expect(envs.code, envs.stderr).toBe(0);
    expect(envs.stdout).toBe(`production -> ${ref}\n`);
    expect(envs.stderr).toContain("broken.json");
    const tags = await run(["list", "tags", app]);
    expect(tags.code, tags.stderr).toBe(0);
    expect(tags.stdout).toBe(`No tags found for ${app}\n`);
    expect(tags.stderr).toContain("v6.6.6.json");
  });
});
