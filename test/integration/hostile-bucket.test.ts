/**
 * A bucket written by someone the host does not fully trust, on the real engine and Ceph RGW: every
 * document and archive below is one a bucket writer could store, with checksums made to match. What
 * they can do is ship bad images under the app's own names; what they cannot do is name anything
 * else in the engine, reach another app's images, exhaust memory or disk, drive the terminal, or
 * merge two versions into one.
 */
import { createHash } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { gunzipSync, gzipSync } from "node:zlib";
import tarStream from "tar-stream";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  buildImage,
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
  imageId,
  listKeys,
  putObject,
  removeAppImages,
  removeDir,
  removeImage,
  runJson,
  runS3dock,
  uniqueName,
  type AppRepo,
} from "./harness.js";

const app = uniqueName("hostile");
const other = uniqueName("hostile-other");
/** A name on the host that has nothing to do with the app: a pull must never point it elsewhere. */
const bystander = `${uniqueName("bystander")}:latest`;
let bucket: string;
let env: Record<string, string>;
let repo: AppRepo;
let dir: string;
let ref: string;
let ref2: string;
let otherRef: string;
let id: string;
let bystanderId: string;
let key: string;
let original: { object: Buffer; metadata: string };

const run = (args: string[], extra: Record<string, string> = {}) => runS3dock(args, { env: { ...env, ...extra } });
const tagOf = (reference: string) => reference.split(":")[1]!;
const imageKeyOf = async (reference: string) => (await listKeys(bucket, `images/${reference.split(":")[0]}/`)).find((k) => k.endsWith(`-${tagOf(reference)}.tar.gz`))!;
const metadataKeyOf = (imageKey: string) => imageKey.replace(/\.tar\.gz$/, ".json");

/** Stores `tar` as the image at `key` with metadata that matches it, as a bucket writer can. */
async function storeArchive(imageKey: string, tar: Buffer, metadata: Record<string, unknown> = {}, level = 1): Promise<void> {
  const object = gzipSync(tar, { level });
  const current = JSON.parse(await getText(bucket, metadataKeyOf(imageKey))) as Record<string, unknown>;
  await putObject(bucket, imageKey, object);
  const updated: Record<string, unknown> = {
    ...current,
    checksum: createHash("md5").update(object).digest("hex"),
    sha256: createHash("sha256").update(object).digest("hex"),
    size: object.length,
    uncompressed_size: tar.length,
    ...metadata,
  };
  for (const [field, value] of Object.entries(updated)) if (value === undefined) delete updated[field];
  await putObject(bucket, metadataKeyOf(imageKey), JSON.stringify(updated, null, 2));
}

/** The stored tar with its manifest.json and repositories changed by `edit`. */
async function editedTar(edit: (file: string, value: unknown) => unknown): Promise<Buffer> {
  const extract = tarStream.extract();
  const pack = tarStream.pack();
  const out: Buffer[] = [];
  pack.on("data", (chunk: unknown) => out.push(chunk as Buffer));
  const packed = new Promise<void>((resolve) => pack.on("end", () => resolve()));
  extract.on("entry", (header, body, next) => {
    const parts: Buffer[] = [];
    body.on("data", (part: unknown) => parts.push(part as Buffer));
    body.on("end", () => {
      let content = Buffer.concat(parts);
      if (header.name === "manifest.json" || header.name === "repositories") content = Buffer.from(JSON.stringify(edit(header.name, JSON.parse(content.toString()))));
      pack.entry({ ...header, size: content.length }, content, next);
    });
  });
  await pipeline(Readable.from([gunzipSync(original.object)]), extract);
  pack.finalize();
  await packed;
  return Buffer.concat(out);
}

async function restore(): Promise<void> {
  await putObject(bucket, key, original.object);
  await putObject(bucket, metadataKeyOf(key), original.metadata);
}

beforeAll(async () => {
  bucket = await createBucket("s3dock-hostile");
  env = cliEnv(bucket);
  dir = mkdtempSync(join(tmpdir(), "s3dock-hostile-"));
  repo = createAppRepo({ randomBytes: 2 * 1024 * 1024 });
  ref = await buildImage(app, repo, env);
  repo.commit("www/index.html", "second\n");
  ref2 = await buildImage(app, repo, env);
  otherRef = await buildImage(other, repo, env);
  for (const image of [ref, ref2, otherRef]) {
    const pushed = await run(["push", image]);
    expect(pushed.code, pushed.stderr).toBe(0);
  }
  expect((await run(["promote", ref, "production"])).code).toBe(0);
  id = imageId(ref);
  key = await imageKeyOf(ref);
  original = { object: await getBytes(bucket, key), metadata: await getText(bucket, metadataKeyOf(key)) };
  bystanderId = dockerBuild(bystander, { "who.txt": "a bystander\n" });
}, 300_000);

// Each test forges what it needs; the next one starts from the image as pushed.
afterEach(async () => {
  if (original) await restore();
});

afterAll(async () => {
  removeAppImages(app);
  removeAppImages(other);
  removeImage(bystander);
  removeImage(`${app}-elsewhere:1`);
  if (repo) removeDir(repo.dir);
  if (dir) removeDir(dir);
  if (bucket) await deleteBucket(bucket);
}, 300_000);

describe("the engine gets only the name being pulled", () => {
  it("an archive naming other images (another app's tag, a bystander) loads under the pulled name alone", async () => {
    const tar = await editedTar((file, value) =>
      file === "manifest.json"
        ? (value as { RepoTags: string[] }[]).map((image) => ({ ...image, RepoTags: [ref, bystander, `${app}-elsewhere:1`, otherRef] }))
        : { [app]: { [tagOf(ref)]: "x" }, [bystander.split(":")[0]!]: { latest: "x" } },
    );
    await storeArchive(key, tar);
    removeImage(ref);
    const result = await runJson(["pull", app, "production"], { env });
    expect(result.code, result.stderr).toBe(0);
    expect(imageId(ref)).toBe(id);
    expect(imageId(bystander)).toBe(bystanderId);
    expect(imageExists(`${app}-elsewhere:1`)).toBe(false);
    expect(docker(["image", "inspect", "--format", "{{json .RepoTags}}", id])).toBe(JSON.stringify([ref]));
  });
});

describe("a refused pull leaves the engine as it was", () => {
  const bogusId = `sha256:${"0".repeat(64)}`;

  it("with nothing under the name before: neither the name nor the loaded image stays", async () => {
    await storeArchive(key, gunzipSync(original.object), { image_id: bogusId, layers: [bogusId] });
    removeImage(ref);
    const result = await run(["pull", app, "production"]);
    expect(result.code).toBe(1);
    // Graphdriver engines report the config digest; the containerd store only the layers (bogus here too).
    expect(errorLines(result.stderr)).toHaveLength(1);
    expect(result.stderr).toContain(`s3dock: ${ref} loaded with `);
    expect(result.stderr).toContain("but its metadata records");
    expect(result.stderr).toContain(bogusId);
    expect(imageExists(ref)).toBe(false);
    expect(imageExists(id)).toBe(false);
  });

  it("with another image under the name before: the name points at it again, the loaded image is gone", async () => {
    await storeArchive(key, gunzipSync(original.object), { image_id: bogusId, layers: [bogusId] });
    removeImage(ref);
    docker(["tag", bystander, ref]);
    const result = await run(["pull", "--force", app, "production"]);
    expect(result.code).toBe(1);
    expect(imageId(ref)).toBe(bystanderId);
    expect(imageExists(id)).toBe(false);
    removeImage(ref);
  });
});

describe("references stay inside their app", () => {
  it("refuses a pointer or a tag of the app whose target is another app's image", async () => {
    const otherKey = await imageKeyOf(otherRef);
    const pointer = { target_type: "image", target_path: otherKey, promoted_at: "2025-07-22T09:01:44Z", promoted_by: "mallory", git_hash: "0000000", git_time: "20250101-0000", source_image: otherRef };
    await putObject(bucket, `pointers/${app}/borrowed.json`, JSON.stringify(pointer));
    await putObject(bucket, `tags/${app}/v6.6.6.json`, JSON.stringify(pointer));
    await putObject(bucket, `pointers/${app}/via-tag.json`, JSON.stringify({ ...pointer, target_type: "tag", target_path: `tags/${other}/v1.0.0.json` }));
    removeImage(otherRef);
    for (const target of ["borrowed", "v6.6.6", "via-tag"]) {
      const result = await run(["pull", app, target]);
      expect(result.code, result.stderr).toBe(1);
      expect(errorLines(result.stderr)).toHaveLength(1);
      expect(result.stderr).toMatch(new RegExp(`which is not one of ${app}'s (images|tags): refusing to follow it`));
    }
    expect(imageExists(otherRef)).toBe(false);
    expect((await run(["current", app, "borrowed"])).code).toBe(1);
  });

  it("refuses metadata that disagrees with its key: another image's pair copied under this one's name", async () => {
    const key2 = await imageKeyOf(ref2);
    const saved = { object: await getBytes(bucket, key2), metadata: await getText(bucket, metadataKeyOf(key2)) };
    await putObject(bucket, key2, original.object);
    await putObject(bucket, metadataKeyOf(key2), original.metadata);
    removeImage(ref);
    removeImage(ref2);
    try {
      const result = await run(["pull", app, tagOf(ref2)]);
      expect(result.code).toBe(1);
      expect(errorLines(result.stderr)).toEqual([
        `s3dock: s3://${bucket}/${metadataKeyOf(key2)} records image_tag "${ref}" but its key names "${ref2}": refusing to use it`,
      ]);
      expect(imageExists(ref2)).toBe(false);
      expect(imageExists(id)).toBe(false);
    } finally {
      await putObject(bucket, key2, saved.object);
      await putObject(bucket, metadataKeyOf(key2), saved.metadata);
    }
  });
});

describe("decompression is bounded", () => {
  it("stops as soon as the archive outgrows the uncompressed_size its metadata records", async () => {
    const tar = gunzipSync(original.object);
    // 256 MiB of zeros after the archive cost the object about 256 KiB more.
    await storeArchive(key, Buffer.concat([tar, Buffer.alloc(256 * 1024 * 1024)]), { uncompressed_size: tar.length }, 9);
    expect(await s3Size(key)).toBeLessThan(original.object.length + 512 * 1024);
    removeImage(ref);
    const result = await run(["pull", app, "production"]);
    expect(result.code).toBe(1);
    expect(errorLines(result.stderr)).toEqual([`s3dock: s3://${bucket}/${key} decompresses to more than the ${tar.length} bytes its metadata records: refusing to load it`]);
    expect(imageExists(ref)).toBe(false);
  });

  it("refuses an image whose metadata records no size (as the Go tool writes it) above transfer.max_image_mb_without_size", async () => {
    await storeArchive(key, gunzipSync(original.object), { uncompressed_size: undefined, sha256: undefined, image_id: undefined });
    const config = join(dir, "ceiling.json5");
    writeFileSync(config, "{ transfer: { max_image_mb_without_size: 1 } }");
    removeImage(ref);
    const refused = await run(["--config", config, "pull", app, "production"]);
    expect(refused.code).toBe(1);
    expect(errorLines(refused.stderr)).toEqual([
      `s3dock: s3://${bucket}/${key} decompresses to more than 1 MiB and its metadata records no uncompressed size: refusing to load it (raise transfer.max_image_mb_without_size if the image is genuine)`,
    ]);
    expect(imageExists(ref)).toBe(false);
    const allowed = await run(["pull", app, "production"]);
    expect(allowed.code, allowed.stderr).toBe(0);
    expect(imageId(ref)).toBe(id);
  });
});

async function s3Size(objectKey: string): Promise<number> {
  return (await getBytes(bucket, objectKey)).length;
}

describe("documents are small", () => {
  it("refuses a 10 MB pointer without reading it whole, and lists the others around it", async () => {
    const pointer = JSON.parse(await getText(bucket, `pointers/${app}/production.json`)) as Record<string, unknown>;
    await putObject(bucket, `pointers/${app}/huge.json`, JSON.stringify({ ...pointer, padding: "x".repeat(10 * 1024 * 1024) }));
    const result = await run(["current", app, "huge"]);
    expect(result.code).toBe(1);
    expect(errorLines(result.stderr)).toEqual([
      `s3dock: s3://${bucket}/pointers/${app}/huge.json is ${10 * 1024 * 1024 + JSON.stringify(pointer).length + '"padding":"",'.length} bytes, more than any s3dock document (64 KiB): refusing to read it`,
    ]);
    const listed = await run(["list", "envs", app]);
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toContain(`production -> ${ref}`);
    expect(listed.stderr).toContain("huge.json is");
  });
});

describe("text output cannot drive the terminal", () => {
  it("escapes control characters from the bucket in list output, and --json keeps the exact value", async () => {
    const pointer = JSON.parse(await getText(bucket, `pointers/${app}/production.json`)) as Record<string, unknown>;
    const forged = `${ref}\n[INFO] 2025-01-01 00:00:00 all good\u001b[2J\u009b31m`;
    await putObject(bucket, `pointers/${app}/forged.json`, JSON.stringify({ ...pointer, source_image: forged }));
    const listed = await run(["list", "envs", app]);
    expect(listed.code, listed.stderr).toBe(0);
    // eslint-disable-next-line no-control-regex -- no control character but the line ends may reach the terminal
    expect(listed.stdout).not.toMatch(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/);
    expect(listed.stdout).toContain(`forged -> ${ref}\\n[INFO] 2025-01-01 00:00:00 all good\\u001b[2J\\u009b31m`);
    expect(listed.stdout.split("\n").filter((line) => line.startsWith("[INFO]"))).toEqual([]);
    const json = await runJson(["list", "envs", app], { env });
    expect(json.doc.data.environments.find((e: { environment: string }) => e.environment === "forged").source_image).toBe(forged);
  });

  it("cuts a value echoed in an error to a few hundred characters", async () => {
    const long = "e".repeat(100_000);
    const result = await run(["pull", app, long]);
    expect(result.code).toBe(2);
    const [line] = errorLines(result.stderr);
    expect(line!.length).toBeLessThan(600);
    expect(line).toMatch(/^s3dock: invalid environment name "e{255}…\(99747 more characters\) /);
    const json = await runJson(["pull", app, long], { env });
    expect(json.doc.error.length).toBeLessThan(600);
  });
});

describe("versions with build metadata", () => {
  it("refuses them in one line rather than merging v1.0.0+build.1 into v1.0.0, and writes nothing", async () => {
    const before = await listKeys(bucket, `tags/${app}/`);
    for (const args of [["tag", ref, "v1.0.0+build.1"], ["pull", app, "v1.0.0+build.1"], ["promote", app, "v1.0.0+build.1", "qa"]]) {
      const result = await run(args);
      expect({ args, code: result.code }).toEqual({ args, code: 2 });
      expect(errorLines(result.stderr)).toEqual([
        's3dock: invalid version "v1.0.0+build.1": build metadata (+build.1) is not supported, as semver ignores it and v1.0.0 would be the same version; use a pre-release (e.g. v1.0.0-build.1) or a new version',
      ]);
    }
    expect(await listKeys(bucket, `tags/${app}/`)).toEqual(before);
  });

  it("lists a tag with build metadata that another tool stored, by its exact name", async () => {
    const tag = { target_type: "image", target_path: key, promoted_at: "2025-07-22T09:01:44Z", promoted_by: "go", git_hash: "0000000", git_time: "20250101-0000", source_image: ref };
    await putObject(bucket, `tags/${app}/v2.0.0+build.7.json`, JSON.stringify(tag));
    await putObject(bucket, `tags/${app}/v2.0.0.json`, JSON.stringify({ ...tag, source_image: ref2 }));
    const listed = await run(["list", "tags", app]);
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toContain(`v2.0.0+build.7 -> ${ref}\n`);
    expect(listed.stdout).toContain(`v2.0.0 -> ${ref2}\n`);
  });
});
