/**
 * A bucket laid out exactly as the Go s3dock v0.1.10 writes it (see /work/shared/upstream-format.md):
 * Go field order and time strings, metadata without sha256/image_id, images in an earlier month
 * folder, an app name with a dash, a pointer through a tag and one straight from an image, bare
 * version names and v1.10.0 beside v1.9.0. Every read command must work on it, tag and promote
 * must find the images there, and pushing an image it already holds must be skipped, not archived.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  cliEnv,
  createBucket,
  deleteBucket,
  dockerBuild,
  dockerSave,
  getBytes,
  getText,
  gzipLikeGo,
  imageExists,
  imageId,
  listKeys,
  md5Hex,
  putObject,
  removeAppImages,
  removeImage,
  runJson,
  runS3dock,
  uniqueName,
} from "./harness.js";

const app = uniqueName("my-app");
const MONTH = "202507";
const older = { gitTime: "20250715-0930", gitHash: "def5678" };
const newer = { gitTime: "20250721-2118", gitHash: "f7a5a27" };
const refOf = (image: typeof older) => `${app}:${image.gitTime}-${image.gitHash}`;
const keyOf = (image: typeof older) => `images/${app}/${MONTH}/${app}-${image.gitTime}-${image.gitHash}.tar.gz`;
const A = refOf(older);
const B = refOf(newer);
const ids: Record<string, string> = {};
let bucket: string;
let env: Record<string, string>;

const run = (args: string[]) => runS3dock(args, { env });
const json = (args: string[]) => runJson(args, { env });
/** Go's json.MarshalIndent with two spaces; the objects below list their fields in the Go structs' order. */
const goJson = (value: object) => JSON.stringify(value, null, 2);

function goPointer(target: { type: "image" | "tag"; path: string; image: typeof older; sourceTag?: string }, promotedAt: string) {
  return goJson({
    target_type: target.type,
    target_path: target.path,
    promoted_at: promotedAt,
    promoted_by: "alice",
    git_hash: target.image.gitHash,
    git_time: target.image.gitTime,
    source_image: refOf(target.image),
    ...(target.sourceTag ? { source_tag: target.sourceTag } : {}),
  });
}

/** Stores one image as Go does: docker save, gzip (one member, level 6), md5 metadata without our fields. */
async function storeLikeGo(image: typeof older, createdAt: string): Promise<void> {
  const object = gzipLikeGo(await dockerSave(refOf(image)));
  await putObject(bucket, keyOf(image), object);
  await putObject(
    bucket,
    keyOf(image).replace(/\.tar\.gz$/, ".json"),
    goJson({
      checksum: md5Hex(object),
      size: object.length,
      created_at: createdAt,
      git_hash: image.gitHash,
      git_time: image.gitTime,
      image_tag: refOf(image),
      app_name: app,
    }),
  );
}

beforeAll(async () => {
  bucket = await createBucket("s3dock-gocompat");
  env = cliEnv(bucket);
  ids[A] = dockerBuild(A, { "version.txt": `older ${app}\n` });
  ids[B] = dockerBuild(B, { "version.txt": `newer ${app}\n` });
  await storeLikeGo(older, "2025-07-15T09:31:12.5+02:00");
  await storeLikeGo(newer, "2025-07-21T21:20:03.512340117+02:00");
  const tag = (version: string, image: typeof older, at: string) => putObject(bucket, `tags/${app}/${version}.json`, goPointer({ type: "image", path: keyOf(image), image }, at));
  await tag("v1.2.0", newer, "2025-07-22T09:01:44.120003+02:00");
  await tag("v1.9.0", older, "2025-07-22T09:02:00Z");
  await tag("v1.10.0", newer, "2025-07-22T09:03:00.1-04:00");
  await tag("1.5.0", older, "2025-07-22T09:04:00+02:00");
  await putObject(
    bucket,
    `pointers/${app}/production.json`,
    goPointer({ type: "tag", path: `tags/${app}/v1.2.0.json`, image: newer, sourceTag: "v1.2.0" }, "2025-07-22T09:05:44.2+02:00"),
  );
  await putObject(bucket, `pointers/${app}/staging.json`, goPointer({ type: "image", path: keyOf(older), image: older }, "2025-07-22T09:06:00+02:00"));
  await putObject(
    bucket,
    `audit/${app}/${MONTH}/20250722-0905-promotion-f7a5a27.json`,
    goJson({
      event_type: "promotion",
      timestamp: "2025-07-22T09:05:44.2+02:00",
      user: "alice",
      app_name: app,
      git_hash: newer.gitHash,
      git_time: newer.gitTime,
      details: { environment: "production", source: `${app}:v1.2.0`, source_type: "tag", pointer_path: `pointers/${app}/production.json` },
    }),
  );
});

afterAll(async () => {
  removeAppImages(app);
  if (bucket) await deleteBucket(bucket);
});

describe("a bucket written by the Go tool", () => {
  it("current resolves a pointer through a tag and one straight to an image (app name with a dash)", async () => {
    expect(await run(["current", app, "production"])).toMatchObject({ code: 0, stdout: `${B}\n` });
    expect(await run(["current", app, "staging"])).toMatchObject({ code: 0, stdout: `${A}\n` });
    const doc = (await json(["current", app, "production"])).doc;
    expect(doc).toMatchObject({ success: true, command: "current", data: { app_name: app, environment: "production", image_ref: B } });
  });

  it("lists apps, images (with --month), tags in semver order, envs and tag-for, as text and --json", async () => {
    expect((await run(["list", "apps"])).stdout.split("\n")).toContain(app);
    expect((await json(["list", "apps"])).doc.data.apps).toContain(app);

    expect((await run(["list", "images", app])).stdout).toBe(`${B}\n${A}\n`);
    expect((await run(["list", "images", app, "--month", MONTH])).stdout).toBe(`${B}\n${A}\n`);
    expect((await run(["list", "images", app, "--month", "202508"])).stdout).toBe(`No images found for ${app}\n`);
    const images = (await json(["list", "images", app, "--month", MONTH])).doc;
    expect(images).toEqual({
      success: true,
      command: "list images",
      data: {
        app_name: app,
        year_month: MONTH,
        images: [
          { app_name: app, tag: `${newer.gitTime}-${newer.gitHash}`, s3_path: keyOf(newer), year_month: MONTH },
          { app_name: app, tag: `${older.gitTime}-${older.gitHash}`, s3_path: keyOf(older), year_month: MONTH },
        ],
      },
    });

    expect((await run(["list", "tags", app])).stdout).toBe(`v1.10.0 -> ${B}\nv1.9.0 -> ${A}\n1.5.0 -> ${A}\nv1.2.0 -> ${B}\n`);
    const tags = (await json(["list", "tags", app])).doc.data;
    expect(tags.tags[0]).toEqual({ app_name: app, version: "v1.10.0", target_image: B, s3_path: `tags/${app}/v1.10.0.json` });

    expect((await run(["list", "envs", app])).stdout).toBe(`production -> ${B} (via v1.2.0)\nstaging -> ${A}\n`);
    const envs = (await json(["list", "envs", app])).doc.data.environments;
    expect(envs).toEqual([
      { app_name: app, environment: "production", target_type: "tag", target_path: `tags/${app}/v1.2.0.json`, source_tag: "v1.2.0", source_image: B },
      { app_name: app, environment: "staging", target_type: "image", target_path: keyOf(older), source_image: A },
    ]);

    expect((await run(["list", "tag-for", app, "production"])).stdout).toBe("v1.2.0\n");
    expect((await run(["list", "tag-for", app, "staging"])).stdout).toBe(`No tag found for ${app}/staging (promoted directly from image)\n`);
    expect((await json(["list", "tag-for", app, "staging"])).doc.data).toEqual({ app_name: app, environment: "staging", tag: "", direct: true });
  });

  it("skips pushing an image it already holds (compared by content, not by compressed bytes)", async () => {
    const before = await listKeys(bucket);
    const metadata = await getText(bucket, keyOf(newer).replace(/\.tar\.gz$/, ".json"));
    const result = await json(["push", B]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.doc.data).toMatchObject({ image_ref: B, s3_key: keyOf(newer), skipped: true, archived: false });
    const after = await listKeys(bucket);
    expect(after.filter((key) => !key.startsWith("audit/"))).toEqual(before.filter((key) => !key.startsWith("audit/")));
    expect(after.some((key) => key.startsWith("archive/"))).toBe(false);
    // Every field the Go tool wrote stays as it was; the skip only adds a write id (see README, Guarantees).
    const rewritten = JSON.parse(await getText(bucket, keyOf(newer).replace(/\.tar\.gz$/, ".json")));
    expect(rewritten.write_id).toMatch(/^[0-9a-f]+$/);
    expect({ ...rewritten, write_id: undefined }).toEqual({ ...JSON.parse(metadata), write_id: undefined });
  });

  it("pulls by environment and by version, verifying the md5 (Go metadata has no sha256)", async () => {
    removeImage(B);
    const byEnv = await json(["pull", app, "production"]);
    expect(byEnv.code, byEnv.stderr).toBe(0);
    expect(byEnv.doc.data).toMatchObject({ image_ref: B, source: "production", source_type: "environment", skipped: false });
    expect(imageId(B)).toBe(ids[B]);

    removeImage(A);
    const byVersion = await json(["pull", app, "v1.9.0"]);
    expect(byVersion.code, byVersion.stderr).toBe(0);
    expect(byVersion.doc.data).toMatchObject({ image_ref: A, source: "v1.9.0", source_type: "tag", skipped: false });
    expect(imageId(A)).toBe(ids[A]);

    // A tag stored under its bare name is found by its version.
    const bare = await json(["pull", app, "1.5.0"]);
    expect(bare.code, bare.stderr).toBe(0);
    expect(bare.doc.data).toMatchObject({ image_ref: A, skipped: true });
  });

  it("tags an image found in an earlier month; an existing Go tag to the same image is skipped, to another refused", async () => {
    const created = await json(["tag", A, "v2.0.0"]);
    expect(created.code, created.stderr).toBe(0);
    expect(created.doc.data).toMatchObject({ image_ref: A, version: "v2.0.0", s3_key: `tags/${app}/v2.0.0.json` });
    expect(JSON.parse(await getText(bucket, `tags/${app}/v2.0.0.json`))).toMatchObject({ target_type: "image", target_path: keyOf(older), source_image: A });

    const same = await json(["tag", B, "v1.2.0"]);
    expect(same.code, same.stderr).toBe(0);
    expect(same.doc.data.skipped).toBe(true);
    const other = await run(["tag", A, "v1.2.0"]);
    expect(other.code).toBe(1);
    expect(JSON.parse(await getText(bucket, `tags/${app}/v1.2.0.json`)).target_path).toBe(keyOf(newer));
  });

  it("promotes from a Go tag and from an image in an earlier month, recording the previous target", async () => {
    const byVersion = await json(["promote", app, "v1.10.0", "qa"]);
    expect(byVersion.code, byVersion.stderr).toBe(0);
    expect(byVersion.doc.data).toMatchObject({ source: `${app}:v1.10.0`, source_type: "tag", image_ref: B, skipped: false });
    expect((await run(["current", app, "qa"])).stdout).toBe(`${B}\n`);

    const byImage = await json(["promote", B, "staging"]);
    expect(byImage.code, byImage.stderr).toBe(0);
    expect(byImage.doc.data).toMatchObject({ source: B, source_type: "image", skipped: false });
    const pointer = JSON.parse(await getText(bucket, `pointers/${app}/staging.json`));
    expect(pointer).toMatchObject({ target_type: "image", target_path: keyOf(newer), source_image: B });
    const events = await Promise.all((await listKeys(bucket, `audit/${app}/`)).map(async (key) => JSON.parse(await getText(bucket, key))));
    const promotion = events.find((event) => event.event_type === "promotion" && event.details.environment === "staging");
    expect(promotion?.details.previous_target).toBe(keyOf(older));

    const unchanged = await json(["promote", app, "v1.2.0", "production"]);
    expect(unchanged.doc.data.skipped).toBe(true);
  });

  it("refuses to load a Go object whose bytes no longer match the md5", async () => {
    const object = await getBytes(bucket, keyOf(older));
    const middle = Math.floor(object.length / 2);
    for (let i = middle; i < middle + 16; i++) object[i] = object[i]! ^ 0xff;
    await putObject(bucket, keyOf(older), object);
    removeImage(A);
    const result = await run(["pull", app, "v1.9.0"]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/refusing to load it/);
    expect(imageExists(A)).toBe(false);
    expect(() => imageId(ids[A]!)).toThrow();
  });
});
