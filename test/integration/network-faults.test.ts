/**
 * Stalls, cut-off bodies and lost answers, injected by a proxy in front of the real S3 server
 * (fault-proxy.ts): every read has an idle timeout and is retried, a short body is a transport
 * failure rather than corruption, and a conditional write whose answer was lost is recognised as
 * our own, reported as done and audited.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { on, startFaultProxy, type FaultProxy } from "./fault-proxy.js";
import {
  auditEvents,
  buildImage,
  cliEnv,
  createAppRepo,
  createBucket,
  deleteBucket,
  docker,
  getText,
  imageExists,
  imageId,
  removeAppImages,
  removeDir,
  runJson,
  runS3dock,
  storeSyntheticImage,
  uniqueName,
  writeConfig,
  type AppRepo,
  type SyntheticImage,
} from "./harness.js";

const APP = uniqueName("netfault");
/** Long enough to tell a hang from a retried stall: the CLI is killed after this. */
const HANG_MS = 60_000;

let bucket: string;
let proxy: FaultProxy;
let env: Record<string, string>;
let config: string;
let image: SyntheticImage;
let other: SyntheticImage;

const run = (args: string[]) => runS3dock(["--config", config, ...args], { env, killAfterMs: HANG_MS });
const json = (args: string[]) => runJson(["--config", config, ...args], { env, killAfterMs: HANG_MS });

beforeAll(async () => {
  bucket = await createBucket("s3dock-netfault");
  proxy = await startFaultProxy();
  env = cliEnv(bucket, { AWS_ENDPOINT_URL: proxy.endpoint });
  config = writeConfig("{ defaults: { retry_count: 3 }, transfer: { idle_timeout: '2s' } }\n");
  image = await storeSyntheticImage(bucket, APP, 1);
  other = await storeSyntheticImage(bucket, APP, 2);
  for (const args of [["tag", image.name, "v1.0.0"], ["promote", image.name, "production"]]) {
    const result = await runS3dock(args, { env: cliEnv(bucket) });
    expect(result.code, result.stderr).toBe(0);
  }
});

afterAll(async () => {
  await proxy?.close();
  if (bucket) await deleteBucket(bucket);
});

describe("a server that stops sending mid-body", () => {
  it("a stalled pointer GET times out after the idle timeout and is read again", async () => {
    proxy.setRules([{ match: on("GET", `pointers/${APP}/production.json`), action: { kind: "stall-body", bytes: 10 } }]);
    const started = Date.now();
    const result = await run(["current", APP, "production"]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout.trim()).toBe(image.name);
    expect(proxy.fired).toEqual([1]);
    expect(result.stderr).toMatch(/broke off .*retrying/);
    // Bounded by the configured 2 s idle timeout, not by the kill.
    expect(Date.now() - started).toBeLessThan(HANG_MS / 2);
  });

  it("a stalled listing is requested again", async () => {
    proxy.setRules([{ match: (r) => r.method === "GET" && r.key === "" && r.query.get("prefix") === `tags/${APP}/`, action: { kind: "stall-body", bytes: 20 } }]);
    const result = await run(["list", "tags", APP]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toContain(`v1.0.0 -> ${image.name}`);
    expect(proxy.fired).toEqual([1]);
  });

  it("a stalled metadata GET (tag) is read again, and the tag is written", async () => {
    proxy.setRules([{ match: on("GET", image.metadataKey), action: { kind: "stall-body", bytes: 1 } }]);
    const result = await run(["tag", image.name, "v1.0.1"]);
    expect(result.code, result.stderr).toBe(0);
    expect(proxy.fired).toEqual([1]);
    expect(JSON.parse(await getText(bucket, `tags/${APP}/v1.0.1.json`)).target_path).toBe(image.key);
  });
});

describe("a body cut short is a transport failure, retried; not corruption", () => {
  it("a short pointer body: current reads it again and answers", async () => {
    proxy.setRules([{ match: on("GET", `pointers/${APP}/production.json`), action: { kind: "short-body", bytes: 40 } }]);
    const result = await run(["current", APP, "production"]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout.trim()).toBe(image.name);
    expect(result.stderr).not.toMatch(/not valid JSON/);
    expect(proxy.fired).toEqual([1]);
  });

  it("a short tag body and a reset metadata GET: promote from the version still works", async () => {
    proxy.setRules([
      { match: on("GET", `tags/${APP}/v1.0.0.json`), action: { kind: "short-body", bytes: 5 } },
      { match: on("GET", image.metadataKey), action: { kind: "short-body", bytes: 0 } },
    ]);
    const result = await json(["promote", APP, "v1.0.0", "staging"]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.doc.data.image_ref).toBe(image.name);
    expect(proxy.fired).toEqual([1, 1]);
  });

  it("a document that arrives whole and does not parse is still reported as corrupt", async () => {
    const result = await runS3dock(["list", "tags", APP], { env: cliEnv(bucket) });
    expect(result.code).toBe(0);
    const { putObject } = await import("./harness.js");
    await putObject(bucket, `pointers/${APP}/broken.json`, '{"target_type": "image", ');
    const current = await run(["current", APP, "broken"]);
    expect(current.code).toBe(1);
    expect(current.stderr).toMatch(/^s3dock: s3:\/\/\S+\/pointers\/.*broken\.json is not valid JSON/m);
  });
});

describe("a conditional write whose answer is lost", () => {
  it("tag: the server created the tag, the answer was lost; the retry's 412 is recognised as our own write", async () => {
    proxy.setRules([{ match: on("PUT", `tags/${APP}/v2.0.0.json`), action: { kind: "drop-response" } }]);
    const result = await json(["tag", other.name, "v2.0.0"]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.doc.data).toMatchObject({ image_ref: other.name, version: "v2.0.0", skipped: false });
    expect(proxy.fired).toEqual([1]);
    expect(JSON.parse(await getText(bucket, `tags/${APP}/v2.0.0.json`)).target_path).toBe(other.key);
    expect((await auditEvents(bucket, APP, "tag")).filter((event) => event.details.version === "v2.0.0")).toHaveLength(1);
  });

  it("promote: the pointer moved, the answer was lost; promote says so and audits the swap", async () => {
    proxy.setRules([{ match: on("PUT", `pointers/${APP}/production.json`), action: { kind: "drop-response" } }]);
    const result = await json(["promote", other.name, "production"]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.doc.data).toMatchObject({ image_ref: other.name, skipped: false, previous_target: image.key });
    expect(proxy.fired).toEqual([1]);
    expect(JSON.parse(await getText(bucket, `pointers/${APP}/production.json`)).target_path).toBe(other.key);
    const events = (await auditEvents(bucket, APP, "promotion")).filter((event) => event.details.environment === "production");
    expect(events.map((event) => [event.details.source, event.details.previous_target])).toContainEqual([other.name, image.key]);
  });

  it("promote --retries: the lost answer is not mistaken for a concurrent promote (no 'skipped')", async () => {
    proxy.setRules([{ match: on("PUT", `pointers/${APP}/production.json`), action: { kind: "drop-response" } }]);
    const result = await json(["promote", "--retries", "3", image.name, "production"]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.doc.data).toMatchObject({ image_ref: image.name, skipped: false, previous_target: other.key, attempts: 1 });
    const events = (await auditEvents(bucket, APP, "promotion")).filter((event) => event.details.environment === "production");
    expect(events.map((event) => [event.details.source, event.details.previous_target])).toContainEqual([image.name, other.key]);
  });

  it("the audit event's own lost answer does not lose or duplicate it", async () => {
    proxy.setRules([{ match: on("PUT", new RegExp(`^audit/${APP}/.*-tag-`)), action: { kind: "drop-response" } }]);
    const result = await run(["tag", image.name, "v3.0.0"]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).not.toMatch(/could not record/);
    expect((await auditEvents(bucket, APP, "tag")).filter((event) => event.details.version === "v3.0.0")).toHaveLength(1);
  });
});

describe("a stalled range of a pull", () => {
  const PULL_APP = uniqueName("netfault-pull");
  let repo: AppRepo;
  let built: string;

  beforeAll(async () => {
    repo = createAppRepo({ randomBytes: 6 * 1024 * 1024 });
    built = await buildImage(PULL_APP, repo, cliEnv(bucket));
    const pushed = await runS3dock(["push", built], { env: cliEnv(bucket) });
    expect(pushed.code, pushed.stderr).toBe(0);
  });

  afterAll(() => {
    removeAppImages(PULL_APP);
    if (repo) removeDir(repo.dir);
  });

  it("push: the metadata write's answer is lost; the push reports it stored, not skipped, and audits it", async () => {
    repo.commit("www/index.html", "lost answer\n");
    const next = await buildImage(PULL_APP, repo, cliEnv(bucket));
    proxy.setRules([{ match: on("PUT", new RegExp(`^images/${PULL_APP}/.*\\.json$`)), action: { kind: "drop-response" } }]);
    const result = await json(["push", next]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.doc.data).toMatchObject({ image_ref: next, skipped: false });
    expect(proxy.fired).toEqual([1]);
    const events = (await auditEvents(bucket, PULL_APP, "push")).filter((event) => event.details.image_reference === next);
    expect(events).toHaveLength(1);
    expect(events[0]!.details.was_skipped).toBeUndefined();
  });

  it("times out on the idle range, downloads it again, and loads the verified image", async () => {
    const id = imageId(built);
    docker(["rmi", built]);
    proxy.setRules([{ match: on("GET", new RegExp(`^images/${PULL_APP}/.*\\.tar\\.gz$`), (r) => r.headers.range !== undefined), action: { kind: "stall-body", bytes: 64 * 1024 } }]);
    const result = await run(["pull", PULL_APP, built.split(":")[1]!]);
    expect(result.code, result.stderr).toBe(0);
    expect(proxy.fired).toEqual([1]);
    expect(result.stderr).toMatch(/range .* failed .*retrying/);
    expect(imageExists(built)).toBe(true);
    expect(imageId(built)).toBe(id);
  });
});
