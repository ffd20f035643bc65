/**
 * A bucket with 1,500 images over three month folders (written straight with the SDK: tiny objects
 * with valid metadata) is listed completely, newest first, across ListObjectsV2 pages; --month
 * filters to one folder; half-written pairs are never listed.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cliEnv, createBucket, deleteBucket, md5Hex, putObjects, runJson, runS3dock, uniqueName } from "./harness.js";

const app = uniqueName("listing");
const MONTHS = ["202509", "202510", "202511"];
const COUNT = 1500;
let bucket: string;
let env: Record<string, string>;

interface Fixture {
  readonly tag: string;
  readonly month: string;
  readonly key: string;
}

const pad = (value: number) => String(value).padStart(2, "0");
const gitTimeOf = (date: Date) =>
  `${date.getUTCFullYear()}${pad(date.getUTCMonth() + 1)}${pad(date.getUTCDate())}-${pad(date.getUTCHours())}${pad(date.getUTCMinutes())}`;

/** Image i: a distinct commit time and hash; its folder is not tied to its time, so order must come from the tag. */
const fixtures: Fixture[] = Array.from({ length: COUNT }, (_, i) => {
  const tag = `${gitTimeOf(new Date(Date.UTC(2025, 8, 1) + i * 37 * 60_000))}-${(0xa000000 + i).toString(16)}`;
  const month = MONTHS[(i * 7) % MONTHS.length]!;
  return { tag, month, key: `images/${app}/${month}/${app}-${tag}.tar.gz` };
});
const newestFirst = (list: readonly Fixture[]) => list.map((fixture) => `${app}:${fixture.tag}`).sort().reverse();

beforeAll(async () => {
  bucket = await createBucket("s3dock-listing");
  env = cliEnv(bucket);
  const objects = fixtures.flatMap((fixture) => {
    const body = Buffer.from(`not really an image: ${fixture.tag}\n`);
    const [gitTime, gitHash] = [fixture.tag.slice(0, 13), fixture.tag.slice(14)];
    const metadata = {
      checksum: md5Hex(body),
      size: body.length,
      created_at: "2025-11-02T10:00:00.25+01:00",
      git_hash: gitHash,
      git_time: gitTime,
      image_tag: `${app}:${fixture.tag}`,
      app_name: app,
    };
    return [
      { key: fixture.key, body },
      { key: fixture.key.replace(/\.tar\.gz$/, ".json"), body: JSON.stringify(metadata, null, 2) },
    ];
  });
  // Half-written pairs: an object whose metadata never came, and metadata without its object.
  objects.push({ key: `images/${app}/202511/${app}-20991231-2359-0000001.tar.gz`, body: Buffer.from("orphan") });
  objects.push({ key: `images/${app}/202511/${app}-20991231-2358-0000002.json`, body: "{}" });
  await putObjects(bucket, objects, 32);
}, 240_000);

afterAll(async () => {
  if (bucket) await deleteBucket(bucket);
});

describe("listing a large bucket", () => {
  it("lists all 1,500 images, newest first by tag, and nothing half-written", async () => {
    const result = await runS3dock(["list", "images", app], { env });
    expect(result.code, result.stderr).toBe(0);
    const lines = result.stdout.trimEnd().split("\n");
    expect(lines).toHaveLength(COUNT);
    expect(lines).toEqual(newestFirst(fixtures));
    expect(result.stdout).not.toContain("2099");
  });

  it("filters one month folder with --month, as text and --json", async () => {
    const inOctober = fixtures.filter((fixture) => fixture.month === "202510");
    const text = await runS3dock(["list", "images", app, "--month", "202510"], { env });
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout.trimEnd().split("\n")).toEqual(newestFirst(inOctober));

    const json = await runJson(["list", "images", app, "--month", "202510"], { env });
    expect(json.doc.data.year_month).toBe("202510");
    expect(json.doc.data.images).toHaveLength(inOctober.length);
    expect(new Set(json.doc.data.images.map((image: { year_month: string }) => image.year_month))).toEqual(new Set(["202510"]));
    const first = inOctober.find((fixture) => `${app}:${fixture.tag}` === newestFirst(inOctober)[0])!;
    expect(json.doc.data.images[0]).toEqual({ app_name: app, tag: first.tag, s3_path: first.key, year_month: "202510" });

    const all = await runJson(["list", "images", app], { env });
    expect(all.doc.data.images).toHaveLength(COUNT);
    expect(all.doc.data).not.toHaveProperty("year_month");
  });

  it("lists the app once among the apps", async () => {
    const apps = (await runS3dock(["list", "apps"], { env })).stdout.split("\n");
    expect(apps.filter((name) => name === app)).toHaveLength(1);
  });
});
