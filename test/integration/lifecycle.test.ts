/**
 * The whole image lifecycle against the real engine and the real S3 server:
 * build → push → tag → promote → current → list → pull, the repeated push that is skipped, the
 * conflicting push that is refused, push --force that archives, tag and promote edge cases, the audit trail, and bad input that
 * must fail with one line, the right exit code and no write to the bucket.
 */
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type AppRepo,
  buildImage,
  cliEnv,
  configDigest,
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
  md5Hex,
  removeAppImages,
  removeDir,
  removeImage,
  runJson,
  runS3dock,
  tarEntries,
  uniqueName,
} from "./harness.js";

const app = uniqueName("lifecycle");
let bucket: string;
let env: Record<string, string>;
let repo: AppRepo;
/** The first build and the second (after a new commit). */
let first: string;
let second: string;
let firstKey: string;
let secondKey: string;
let pushes = 0;

const run = (args: string[]) => runS3dock(args, { env });
const json = (args: string[]) => runJson(args, { env });
const tagOf = (ref: string) => ref.slice(ref.indexOf(":") + 1);
const metadataKey = (imageKey: string) => imageKey.replace(/\.tar\.gz$/, ".json");

async function push(ref: string, ...flags: string[]) {
  const result = await json(["push", ...flags, ref]);
  pushes++;
  expect(result.code, result.stderr).toBe(0);
  return result.doc.data as Record<string, any>;
}

beforeAll(async () => {
  bucket = await createBucket("s3dock-lifecycle");
  env = cliEnv(bucket);
  repo = createAppRepo({ randomBytes: 256 * 1024, textBytes: 512 * 1024 });
});

afterAll(async () => {
  removeAppImages(app);
  if (bucket) await deleteBucket(bucket);
  if (repo) removeDir(repo.dir);
});

describe("image lifecycle", () => {
  it("builds, and pushes the image with Go-compatible metadata and a valid archive", async () => {
    first = await buildImage(app, repo, env);
    expect(first).toMatch(new RegExp(`^${app}:\\d{8}-\\d{4}-[0-9a-f]{7}$`));

    const data = await push(first);
    const month = /^images\/[^/]+\/(\d{6})\//.exec(data.s3_key)?.[1];
    expect(data).toMatchObject({ image_ref: first, skipped: false, archived: false });
    expect(data.s3_key).toBe(`images/${app}/${month}/${app}-${tagOf(first)}.tar.gz`);
    firstKey = data.s3_key;

    const metadata = JSON.parse(await getText(bucket, metadataKey(firstKey)));
    // Go's fields first, in Go's order, with Go's types.
    expect(Object.keys(metadata).slice(0, 7)).toEqual(["checksum", "size", "created_at", "git_hash", "git_time", "image_tag", "app_name"]);
    const [gitTime, gitHash] = [tagOf(first).slice(0, 13), tagOf(first).slice(14)];
    expect(metadata).toMatchObject({ git_hash: gitHash, git_time: gitTime, image_tag: first, app_name: app, image_id: await configDigest(first) });
    expect(metadata.created_at).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/);
    expect(metadata.checksum).toMatch(/^[0-9a-f]{32}$/);
    expect(metadata.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(typeof metadata.size).toBe("number");
    expect(metadata.layers).toEqual(JSON.parse(docker(["image", "inspect", "--format", "{{json .RootFS.Layers}}", first])));
    expect(data.checksum).toBe(metadata.checksum);

    // The object is what the metadata says: md5, sha256 and size of the downloaded bytes.
    const object = await getBytes(bucket, firstKey);
    expect(object.length).toBe(metadata.size);
    expect(md5Hex(object)).toBe(metadata.checksum);
    expect(execFileSync("sha256sum", { input: object, encoding: "utf8" }).split(" ")[0]).toBe(metadata.sha256);

    // A valid gzip of a docker save tar whose entries all carry the commit time.
    const entries = await tarEntries(gunzipSync(object));
    expect(entries.map((entry) => entry.name)).toContain("manifest.json");
    const commitTime = Date.UTC(+gitTime.slice(0, 4), +gitTime.slice(4, 6) - 1, +gitTime.slice(6, 8), +gitTime.slice(9, 11), +gitTime.slice(11, 13));
    expect(new Set(entries.map((entry) => entry.mtime?.getTime()))).toEqual(new Set([commitTime]));
  });

  it("stores an object that GNU gunzip decompresses and docker load accepts (the Go tool's reader path)", async () => {
    const file = join(tmpdir(), `${uniqueName("lifecycle-object")}.tar.gz`);
    writeFileSync(file, await getBytes(bucket, firstKey));
    const id = imageId(first);
    try {
      execFileSync("gzip", ["-t", file]);
      removeImage(first);
      expect(imageExists(first)).toBe(false);
      const out = execFileSync("sh", ["-c", `gunzip -c '${file}' | docker load`], { encoding: "utf8" });
      expect(out).toContain(first);
      expect(imageId(first)).toBe(id);
    } finally {
      removeDir(file);
    }
  });

  it("skips a repeated push of the same image: only the metadata's write id changes (which keeps a concurrent cleanup off it)", async () => {
    const before = await listKeys(bucket, "images/");
    const metadataBefore = JSON.parse(await getText(bucket, metadataKey(firstKey)));
    const data = await push(first);
    expect(data).toMatchObject({ image_ref: first, s3_key: firstKey, skipped: true, archived: false });
    expect(Object.keys(data)).toEqual(expect.arrayContaining(["image_ref", "s3_key", "checksum", "size", "skipped", "archived"]));
    expect(await listKeys(bucket, "images/")).toEqual(before);
    const metadataAfter = JSON.parse(await getText(bucket, metadataKey(firstKey)));
    expect(metadataAfter.write_id).not.toBe(metadataBefore.write_id);
    expect({ ...metadataAfter, write_id: undefined }).toEqual({ ...metadataBefore, write_id: undefined });
  });

  it("tags the image; the same tag again is skipped", async () => {
    const result = await json(["tag", first, "v1.0.0"]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.doc.data).toMatchObject({ image_ref: first, version: "v1.0.0", s3_key: `tags/${app}/v1.0.0.json` });
    const tag = JSON.parse(await getText(bucket, `tags/${app}/v1.0.0.json`));
    expect(tag).toMatchObject({ target_type: "image", target_path: firstKey, source_image: first, git_hash: tagOf(first).slice(14) });

    const again = await json(["tag", first, "v1.0.0"]);
    expect(again.code).toBe(0);
    expect(again.doc.data.skipped).toBe(true);
    expect(await getText(bucket, `tags/${app}/v1.0.0.json`)).toBe(JSON.stringify(tag, null, 2));
  });

  it("promotes by image and by version; an unchanged promote is skipped", async () => {
    const byImage = await json(["promote", first, "staging"]);
    expect(byImage.code, byImage.stderr).toBe(0);
    expect(byImage.doc.data).toMatchObject({ source: first, environment: "staging", source_type: "image", image_ref: first, skipped: false });

    const byVersion = await json(["promote", app, "v1.0.0", "production"]);
    expect(byVersion.code, byVersion.stderr).toBe(0);
    expect(byVersion.doc.data).toMatchObject({ source: `${app}:v1.0.0`, environment: "production", source_type: "tag", image_ref: first, skipped: false });
    const pointer = JSON.parse(await getText(bucket, `pointers/${app}/production.json`));
    expect(pointer).toMatchObject({ target_type: "tag", target_path: `tags/${app}/v1.0.0.json`, source_tag: "v1.0.0", source_image: first });

    const auditBefore = await listKeys(bucket, `audit/${app}/`);
    const unchanged = await json(["promote", app, "v1.0.0", "production"]);
    expect(unchanged.code).toBe(0);
    expect(unchanged.doc.data.skipped).toBe(true);
    expect(await listKeys(bucket, `audit/${app}/`)).toEqual(auditBefore);
  });

  it("shows the state: current and every list, as text and --json", async () => {
    expect((await run(["current", app, "production"])).stdout).toBe(`${first}\n`);
    expect((await run(["current", app, "staging"])).stdout).toBe(`${first}\n`);
    const current = await json(["current", app, "production"]);
    expect(current.doc.data).toMatchObject({ app_name: app, environment: "production", image_ref: first });

    expect((await run(["list", "apps"])).stdout.split("\n")).toContain(app);
    expect((await run(["list", "images", app])).stdout).toBe(`${first}\n`);
    expect((await run(["list", "tags", app])).stdout).toBe(`v1.0.0 -> ${first}\n`);
    expect((await run(["list", "envs", app])).stdout).toBe(`production -> ${first} (via v1.0.0)\nstaging -> ${first}\n`);
    expect((await run(["list", "environments", app])).stdout).toBe(`production -> ${first} (via v1.0.0)\nstaging -> ${first}\n`);
    expect((await run(["list", "tag-for", app, "production"])).stdout).toBe("v1.0.0\n");
    expect((await run(["list", "tag-for", app, "staging"])).stdout).toBe(`No tag found for ${app}/staging (promoted directly from image)\n`);

    const images = await json(["list", "images", app]);
    expect(images.doc).toMatchObject({ success: true, command: "list images" });
    expect(images.doc.data.images).toEqual([{ app_name: app, tag: tagOf(first), s3_path: firstKey, year_month: firstKey.split("/")[2] }]);
    const envs = await json(["list", "envs", app]);
    expect(envs.doc.data.environments[0]).toEqual({
      app_name: app,
      environment: "production",
      target_type: "tag",
      target_path: `tags/${app}/v1.0.0.json`,
      source_tag: "v1.0.0",
      source_image: first,
    });
    expect(envs.doc.data.environments[1]).not.toHaveProperty("source_tag");
  });

  it("pulls: skipped while the engine has the image, loaded (same ID) by env and by version after docker rmi", async () => {
    const id = imageId(first);
    const present = await json(["pull", app, "production"]);
    expect(present.code, present.stderr).toBe(0);
    expect(present.doc.data).toMatchObject({ image_ref: first, source: "production", source_type: "environment", skipped: true });

    removeImage(first);
    const byEnv = await json(["pull", app, "production"]);
    expect(byEnv.code, byEnv.stderr).toBe(0);
    expect(byEnv.doc.data).toMatchObject({ image_ref: first, source_type: "environment", skipped: false });
    expect(imageId(first)).toBe(id);

    removeImage(first);
    const byVersion = await json(["pull", app, "v1.0.0"]);
    expect(byVersion.code, byVersion.stderr).toBe(0);
    expect(byVersion.doc.data).toMatchObject({ image_ref: first, source: "v1.0.0", source_type: "tag", skipped: false });
    expect(imageId(first)).toBe(id);
  });

  it("refuses to re-point a version at another image unless --force, which archives the old tag", async () => {
    repo.commit("www/index.html", "second version\n");
    second = await buildImage(app, repo, env);
    expect(second).not.toBe(first);
    secondKey = (await push(second)).s3_key;

    const before = await listKeys(bucket);
    const refused = await run(["tag", second, "v1.0.0"]);
    expect(refused.code).toBe(1);
    expect(errorLines(refused.stderr)).toHaveLength(1);
    expect(refused.stderr).toContain("v1.0.0");
    expect(await listKeys(bucket)).toEqual(before);

    const forced = await json(["tag", "--force", second, "v1.0.0"]);
    expect(forced.code, forced.stderr).toBe(0);
    expect(JSON.parse(await getText(bucket, `tags/${app}/v1.0.0.json`)).target_path).toBe(secondKey);
    const archivedTags = await listKeys(bucket, `archive/${app}/tags/`);
    expect(archivedTags).toHaveLength(1);
    expect(archivedTags[0]).toMatch(new RegExp(`^archive/${app}/tags/v1\\.0\\.0-archived-on-\\d{8}-\\d{4}-[0-9a-f]{8}\\.json$`));
    expect(JSON.parse(await getText(bucket, archivedTags[0]!)).target_path).toBe(firstKey);
    // production follows the tag
    expect((await run(["current", app, "production"])).stdout).toBe(`${second}\n`);
  });

  it("records the replaced target in the promotion's audit event", async () => {
    const result = await json(["promote", second, "staging"]);
    expect(result.code, result.stderr).toBe(0);
    const events = await Promise.all((await listKeys(bucket, `audit/${app}/`)).map(async (key) => JSON.parse(await getText(bucket, key))));
    const promotion = events.find((event) => event.event_type === "promotion" && event.details.environment === "staging" && event.details.source === second);
    expect(promotion?.details).toMatchObject({ source_type: "image", pointer_path: `pointers/${app}/staging.json`, previous_target: firstKey });
    const firstPromotion = events.find((event) => event.event_type === "promotion" && event.details.source === first);
    expect(firstPromotion?.details).not.toHaveProperty("previous_target");
  });

  it("refuses different content under a stored name: exit 1, one clear line, nothing written", async () => {
    // Different content under the very same app:tag name (a rebuild of the same commit).
    const scratch = `${app}-scratch:conflict`;
    const newId = dockerBuild(scratch, { "conflict.txt": `different content ${Date.now()}\n` });
    docker(["tag", scratch, second]);
    removeImage(scratch);
    expect(imageId(second)).toBe(newId);
    const before = await listKeys(bucket);
    const metadataBefore = await getText(bucket, metadataKey(secondKey));

    const refused = await run(["push", second]);
    expect(refused.code).toBe(1);
    expect(errorLines(refused.stderr)).toEqual([expect.stringMatching(new RegExp(`^s3dock: ${second} is already stored with different content .*push --force`))]);
    expect(await listKeys(bucket)).toEqual(before);
    expect(await getText(bucket, metadataKey(secondKey))).toBe(metadataBefore);
    const refusedJson = await json(["push", second]);
    expect(refusedJson.doc).toMatchObject({ success: false, error_type: "conflict", exit_code: 1 });
  });

  it("push --force archives and replaces the stored image, and says which versions and environments now name it", async () => {
    const newId = imageId(second);
    const oldMetadata = await getText(bucket, metadataKey(secondKey));
    const oldObject = await getBytes(bucket, secondKey);
    const data = await push(second, "--force");
    expect(data).toMatchObject({ image_ref: second, s3_key: secondKey, skipped: false, archived: true, image_id: await configDigest(second) });
    expect(data.replaced).toMatchObject({ previous_image_id: JSON.parse(oldMetadata).image_id, versions: ["v1.0.0"], environments: ["production", "staging"] });

    const month = secondKey.split("/")[2];
    const archived = await listKeys(bucket, `archive/${app}/${month}/`);
    const base = `archive/${app}/${month}/${app}-${tagOf(second)}-archived-on-`;
    expect(archived).toHaveLength(2);
    expect(archived[0]).toMatch(new RegExp(`^${base}\\d{8}-\\d{4}-[0-9a-f]{8}\\.json$`));
    expect(archived[1]).toBe(archived[0]!.replace(/\.json$/, ".tar.gz"));
    expect(data.replaced.archive_key).toBe(archived[1]);
    expect(await getText(bucket, archived[0]!)).toBe(oldMetadata);
    expect((await getBytes(bucket, archived[1]!)).equals(oldObject)).toBe(true);
    // Nothing left in staging.
    expect(await listKeys(bucket, ".s3dock/staging/")).toEqual([]);

    const metadata = JSON.parse(await getText(bucket, metadataKey(secondKey)));
    expect(metadata.image_id).toBe(await configDigest(second));
    expect(md5Hex(await getBytes(bucket, secondKey))).toBe(metadata.checksum);

    // staging now serves the new content
    removeImage(second);
    const pulled = await json(["pull", app, "staging"]);
    expect(pulled.code, pulled.stderr).toBe(0);
    expect(imageId(second)).toBe(newId);
  });

  it("push --force as text names what now points at the new content", async () => {
    const scratch = `${app}-scratch:again`;
    dockerBuild(scratch, { "again.txt": `yet other content ${Date.now()}\n` });
    docker(["tag", scratch, second]);
    removeImage(scratch);
    const result = await run(["push", "--force", second]);
    pushes++;
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(new RegExp(`^replaced ${second} \\(was image sha256:[0-9a-f]{64}, now sha256:[0-9a-f]{64}\\); the old image is archived at archive/${app}/`, "m"));
    expect(result.stdout).toMatch(/^now naming the new content: versions v1\.0\.0; environments production, staging$/m);
    // Two replacements of one image within a minute: two archives, neither overwritten.
    expect((await listKeys(bucket, `archive/${app}/${secondKey.split("/")[2]}/`)).filter((key) => key.endsWith(".tar.gz"))).toHaveLength(2);
  });

  it("keeps one audit event per push, tag, promotion and pull, under unique keys", async () => {
    const keys = await listKeys(bucket, `audit/${app}/`);
    for (const key of keys) expect(key).toMatch(new RegExp(`^audit/${app}/\\d{6}/\\d{8}-\\d{4}-(push|tag|promotion|pull)-[0-9a-f]{7}-[0-9a-z]+\\.json$`));
    const events = await Promise.all(keys.map(async (key) => JSON.parse(await getText(bucket, key))));
    const count = (type: string) => events.filter((event) => event.event_type === type).length;
    // Several pushes of one commit fall in the same minute: none may overwrite another.
    expect(count("push")).toBe(pushes);
    expect(events.filter((event) => event.event_type === "push" && event.details.was_skipped === true)).toHaveLength(1);
    expect(events.filter((event) => event.event_type === "push" && event.details.was_archived === true)).toHaveLength(2);
    expect(count("tag")).toBe(2);
    expect(count("promotion")).toBe(3);
    expect(count("pull")).toBeGreaterThanOrEqual(4);
    for (const event of events) {
      expect(Object.keys(event).slice(0, 7)).toEqual(["event_type", "timestamp", "user", "app_name", "git_hash", "git_time", "details"]);
      expect(event.app_name).toBe(app);
    }
  });

  it("fails bad input with one line on stderr, the right exit code, and no write to the bucket", async () => {
    const before = await listKeys(bucket);
    const cases: [string[], number][] = [
      [["push", "Bad_App:20250101-0000-abcdef0"], 2],
      [["push", app], 2],
      [["push", `${app}:latest`], 2],
      [["push", `${app}:20251340-0000-abcdef0`], 2],
      [["push", `${app}:20250101-0000-abcdef0`], 1], // well-formed, not in the engine
      [["tag", first, "1.0"], 2],
      [["tag", first, "latest"], 2],
      [["tag", `${app}:20250101-0000-abcdef0`, "v9.0.0"], 1], // not pushed
      [["promote", first, "bad env!"], 2],
      [["promote", "not-a-ref", "staging"], 2],
      [["promote", app, "v9.9.9", "staging"], 1], // missing tag
      [["pull", app, "nowhere"], 1], // missing pointer
      [["pull", app, "v9.9.9"], 1],
      [["pull", "UPPER", "production"], 2],
      [["current", app, "nowhere"], 1],
      [["current", app, "-bad"], 2],
      [["list", "images", app, "--month", "202513"], 2],
      [["list", "tag-for", app, "nowhere"], 1],
    ];
    for (const [args, code] of cases) {
      const result = await run(args);
      expect({ args, code: result.code }).toEqual({ args, code });
      expect(result.stdout).toBe("");
      expect(errorLines(result.stderr), `${args.join(" ")}: ${result.stderr}`).toHaveLength(1);
      expect(result.stderr).toMatch(/^s3dock: /m);
    }
    const failed = await json(["pull", app, "nowhere"]);
    expect(failed.code).toBe(1);
    expect(failed.doc).toMatchObject({ success: false, command: "pull" });
    expect(await listKeys(bucket)).toEqual(before);
  });
});
