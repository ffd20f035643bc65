/**
 * Write-once tags and lost-update-free pointers under real concurrency: many CLI processes at once
 * against the real S3 server. The images are synthetic (an object and its metadata written with the
 * SDK): tag and promote only need the stored pair, so twenty distinct images cost nothing.
 */
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  cliEnv,
  createBucket,
  deleteBucket,
  getText,
  listKeys,
  runJson,
  runS3dock,
  storeSyntheticImage as storeSynthetic,
  type RunResult,
  type SyntheticImage,
} from "./harness.js";

const APP = `conc-${randomBytes(3).toString("hex")}`;
const MONTH = "202501";

let bucket: string;
let env: Record<string, string>;

const storeSyntheticImage = (index: number): Promise<SyntheticImage> => storeSynthetic(bucket, APP, index, MONTH);

async function auditEvents(type: string): Promise<Record<string, any>[]> {
  const keys = await listKeys(bucket, `audit/${APP}/`);
  const events = await Promise.all(keys.map(async (key) => JSON.parse(await getText(bucket, key)) as Record<string, any>));
  return events.filter((event) => event.event_type === type);
}

/**
 * The successful swaps must form one chain: starting from `initial`, each swap's previous_target is
 * the target the one before it wrote, and the last one wrote what the pointer holds now.
 */
function expectSingleChain(events: Record<string, any>[], targetOf: Map<string, string>, initial: string | undefined, final: string): void {
  const byPrevious = new Map<string | undefined, Record<string, any>>();
  for (const event of events) {
    const previous = event.details.previous_target as string | undefined;
    // Two swaps claiming the same predecessor would be a lost update.
    expect(byPrevious.has(previous), `two promotions replaced ${previous}`).toBe(false);
    byPrevious.set(previous, event);
  }
  let at = initial;
  for (let i = 0; i < events.length; i++) {
    const event = byPrevious.get(at);
    expect(event, `no successful promotion replaced ${at}`).toBeDefined();
    at = targetOf.get(event!.details.source as string);
  }
  expect(at).toBe(final);
}

beforeAll(async () => {
  bucket = await createBucket("s3dock-conc");
  env = cliEnv(bucket);
});

afterAll(async () => {
  if (bucket) await deleteBucket(bucket);
});

describe("conditional writes", () => {
  it("detects that the S3 server honours If-None-Match and so uses real conditional writes", async () => {
    const image = await storeSyntheticImage(900);
    const result = await runS3dock(["--log-level", "3", "tag", image.name, "v0.0.1"], { env });
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toContain("the S3 server honours conditional writes");
    expect(result.stderr).not.toContain("falling back to checked read-back");
  });
});

describe("write-once version tags", () => {
  let first: SyntheticImage;
  let second: SyntheticImage;

  beforeAll(async () => {
    first = await storeSyntheticImage(1);
    second = await storeSyntheticImage(2);
    const tagged = await runS3dock(["tag", first.name, "v1.2.0"], { env });
    expect(tagged.code, tagged.stderr).toBe(0);
  });

  it("refuses to move a version to another image and leaves the tag as it was", async () => {
    const before = await getText(bucket, `tags/${APP}/v1.2.0.json`);
    const result = await runJson(["tag", second.name, "v1.2.0"], { env });
    expect(result.code).toBe(1);
    expect(result.doc.success).toBe(false);
    expect(result.doc.error).toMatch(/already points to .*immutable/);
    expect(await getText(bucket, `tags/${APP}/v1.2.0.json`)).toBe(before);
  });

  it("with --force archives the old tag and audits the replacement", async () => {
    const before = await getText(bucket, `tags/${APP}/v1.2.0.json`);
    const result = await runJson(["tag", "--force", second.name, "v1.2.0"], { env });
    expect(result.code, result.stderr).toBe(0);
    expect(result.doc.data.replaced).toBe(first.name);
    expect(JSON.parse(await getText(bucket, `tags/${APP}/v1.2.0.json`)).target_path).toBe(second.key);
    const archived = await listKeys(bucket, `archive/${APP}/tags/`);
    expect(archived).toHaveLength(1);
    expect(archived[0]).toMatch(new RegExp(`^archive/${APP}/tags/v1\\.2\\.0-archived-on-\\d{8}-\\d{4}-[0-9a-f]{8}\\.json$`));
    expect(await getText(bucket, archived[0]!)).toBe(before);
    const forced = (await auditEvents("tag")).filter((event) => event.details.version === "v1.2.0" && event.details.replaced_image);
    expect(forced).toHaveLength(1);
    expect(forced[0]!.details.replaced_image).toBe(first.name);
    expect(forced[0]!.details.image_reference).toBe(second.name);
  });

  it("ten concurrent tags of one new version: exactly one wins, the others report a conflict", async () => {
    const images = await Promise.all(Array.from({ length: 10 }, (_, i) => storeSyntheticImage(100 + i)));
    const results = await Promise.all(images.map((image) => runJson(["tag", image.name, "v2.0.0"], { env })));
    const winners = results.flatMap((result, i) => (result.code === 0 ? [images[i]!] : []));
    expect(winners, results.map((r) => r.doc.error).join("\n")).toHaveLength(1);
    for (const result of results.filter((r) => r.code !== 0)) {
      expect(result.code).toBe(1);
      expect(result.doc.error_type).toBe("conflict");
      expect(result.doc.error).toMatch(/already (points to|exists)|changed by someone else/);
    }
    const tag = JSON.parse(await getText(bucket, `tags/${APP}/v2.0.0.json`));
    expect(tag.target_path).toBe(winners[0]!.key);
    expect((await auditEvents("tag")).filter((event) => event.details.version === "v2.0.0")).toHaveLength(1);
  });
});

describe("environment pointers under twenty concurrent promotes", () => {
  const COUNT = 20;
  let images: SyntheticImage[];
  const targetOf = new Map<string, string>();

  beforeAll(async () => {
    images = await Promise.all(Array.from({ length: COUNT + 1 }, (_, i) => storeSyntheticImage(200 + i)));
    for (const image of images) targetOf.set(image.name, image.key);
  });

  async function promoteAll(envName: string, extra: string[]): Promise<RunResult[]> {
    return Promise.all(images.slice(1).map((image) => runJson(["promote", ...extra, image.name, envName], { env })));
  }

  async function pointerTarget(envName: string): Promise<string> {
    const text = await getText(bucket, `pointers/${APP}/${envName}.json`);
    // Never torn: the stored pointer is always one whole JSON document.
    return (JSON.parse(text) as { target_path: string }).target_path;
  }

  it("without --retries: every promote either swaps with a true predecessor or reports a conflict", async () => {
    const initial = images[0]!;
    expect((await runS3dock(["promote", initial.name, "race"], { env })).code).toBe(0);
    const results = await promoteAll("race", []);
    const succeeded = results.flatMap((result, i) => (result.code === 0 ? [images[i + 1]!] : []));
    expect(succeeded.length).toBeGreaterThanOrEqual(1);
    for (const result of results.filter((r) => r.code !== 0)) {
      expect(result.code).toBe(1);
      expect(JSON.parse(result.stdout).error).toMatch(/was promoted by someone else while this promote ran/);
    }
    const final = await pointerTarget("race");
    expect(succeeded.map((image) => image.key)).toContain(final);

    const events = (await auditEvents("promotion")).filter((event) => event.details.environment === "race" && event.details.source !== initial.name);
    // Exactly one event per successful promote, none for the refused ones.
    expect(events.map((event) => event.details.source).sort()).toEqual(succeeded.map((image) => image.name).sort());
    expectSingleChain(events, targetOf, initial.key, final);
  });

  it("with --retries 25: all twenty succeed and their events form one chain of twenty", async () => {
    const results = await promoteAll("race-retried", ["--retries", "25"]);
    expect(results.map((result) => result.code), results.map((r) => r.stderr).join("\n")).toEqual(Array(COUNT).fill(0));
    const final = await pointerTarget("race-retried");
    const events = (await auditEvents("promotion")).filter((event) => event.details.environment === "race-retried");
    expect(events).toHaveLength(COUNT);
    expectSingleChain(events, targetOf, undefined, final);
    const attempts = results.map((result) => JSON.parse(result.stdout).data.attempts as number);
    // Some of them really raced: without retries those would have been conflicts.
    expect(Math.max(...attempts)).toBeGreaterThan(1);
  });
});
