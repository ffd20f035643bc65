/**
 * cleanup remote over many images and tags (seeded straight into the real S3 server): the tags are
 * read once, and only listed again per batch of deletions, not read before every deletion; and an
 * interrupted run has already recorded in the audit trail every image it deleted (an event per
 * image). scripts/bench-cleanup.mjs measures 5,000 images and tags.
 */
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startFaultProxy, type FaultProxy } from "./fault-proxy.js";
import { sleep } from "./fault-server.js";
import { CLI, NODE, auditEvents, cliEnv, createBucket, deleteBucket, listKeys, putObjects, runJson } from "./harness.js";

const IMAGES = 450;
const TAGS = 300;
/** Images the tags name (the rest are candidates). */
const TAGGED = 10;

let bucket: string;
let proxy: FaultProxy;

/** `count` images of `app` (object + metadata) and `tags` tags spread over the first `tagged` of them. */
async function seed(app: string, count: number, tags: number, tagged: number): Promise<string[]> {
  const objects: { key: string; body: string | Buffer }[] = [];
  const names: string[] = [];
  for (let i = 0; i < count; i++) {
    const gitTime = `2025${String(1 + Math.floor(i / 1440) % 12).padStart(2, "0")}01-${String(Math.floor(i / 60) % 24).padStart(2, "0")}${String(i % 60).padStart(2, "0")}`;
    const gitHash = randomBytes(4).toString("hex").slice(0, 7);
    const base = `images/${app}/202501/${app}-${gitTime}-${gitHash}`;
    const body = randomBytes(32);
    names.push(`${app}:${gitTime}-${gitHash}`);
    objects.push({ key: `${base}.tar.gz`, body });
    const metadata = { checksum: createHash("md5").update(body).digest("hex"), size: body.length, created_at: "2025-01-01T00:00:00Z", git_hash: gitHash, git_time: gitTime, image_tag: names[i], app_name: app };
    objects.push({ key: `${base}.json`, body: JSON.stringify(metadata, null, 2) });
  }
  for (let t = 0; t < tags; t++) {
    const target = objects[2 * (t % tagged)]!.key;
    const tag = { target_type: "image", target_path: target, promoted_at: "2025-01-01T00:00:00Z", promoted_by: "seed", git_hash: "0000000", git_time: "20250101-0000", source_image: names[t % tagged] };
    objects.push({ key: `tags/${app}/v0.${Math.floor(t / 100)}.${t % 100}.json`, body: JSON.stringify(tag, null, 2) });
  }
  await putObjects(bucket, objects, 32);
  return names;
}

beforeAll(async () => {
  bucket = await createBucket("s3dock-cleanscale");
  proxy = await startFaultProxy();
});

afterAll(async () => {
  await proxy?.close();
  if (bucket) await deleteBucket(bucket);
}, 600_000);

describe(`cleanup remote over ${IMAGES} images and ${TAGS} tags`, () => {
  it("reads each tag a bounded number of times, whatever the number of deletions", async () => {
    const app = "scale-a";
    await seed(app, IMAGES, TAGS, TAGGED);
    const env = cliEnv(bucket, { AWS_ENDPOINT_URL: proxy.endpoint });
    proxy.setRules([]);
    const tagReads = () => proxy.seen.filter((r) => r.method === "GET" && r.key.startsWith(`tags/${app}/`)).length;

    const dry = await runJson(["cleanup", "remote", app, "--older-than", "0s", "--keep", "0"], { env });
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.doc.data.candidates).toHaveLength(IMAGES - TAGGED);
    // One pass over the tags for the dry run.
    expect(tagReads()).toBe(TAGS);

    const before = proxy.seen.length;
    const real = await runJson(["cleanup", "remote", app, "--older-than", "0s", "--keep", "0", "--yes"], { env });
    expect(real.code, real.stderr).toBe(0);
    expect(real.doc.data.deleted).toHaveLength(IMAGES - TAGGED);
    // The tags are read once in full; the re-checks after each batch's marks only list them.
    expect(tagReads()).toBe(2 * TAGS);
    // Requests grow with the images, not with images × tags.
    expect(proxy.seen.length - before).toBeLessThan(10 * IMAGES + 2 * TAGS);
    expect((await listKeys(bucket, `images/${app}/`)).length).toBe(2 * TAGGED);
    // An audit event per deletion.
    const events = await auditEvents(bucket, app, "cleanup");
    expect(events).toHaveLength(IMAGES - TAGGED);
    expect(events.flatMap((event) => event.details.deleted as string[]).sort()).toEqual(real.doc.data.deleted.map((c: { image: string }) => c.image).sort());
  });

  it("an interrupted run has recorded in the audit trail every image it deleted", async () => {
    const app = "scale-b";
    const names = await seed(app, IMAGES, 0, 1);
    const child = spawn(NODE, [CLI, "cleanup", "remote", app, "--older-than", "0s", "--keep", "0", "--yes"], { env: cliEnv(bucket), stdio: "ignore" });
    const exited = new Promise<void>((resolve) => child.on("close", () => resolve()));
    // Killed in the middle of its deletions.
    const deadline = Date.now() + 120_000;
    while ((await listKeys(bucket, `audit/${app}/`)).length < 50 && Date.now() < deadline) await sleep(20);
    child.kill("SIGKILL");
    await exited;
    const remaining = new Set((await listKeys(bucket, `images/${app}/`)).filter((key) => key.endsWith(".json")));
    const deleted = names.filter((name) => ![...remaining].some((key) => key.endsWith(`${name.split(":")[1]}.json`)));
    expect(deleted.length).toBeGreaterThan(0);
    expect(deleted.length).toBeLessThan(IMAGES);
    const recorded = new Set((await auditEvents(bucket, app, "cleanup")).flatMap((event) => event.details.deleted as string[]));
    // Deleted but not recorded: at most the deletions in flight when it was killed (16 at once).
    const unrecorded = deleted.filter((name) => !recorded.has(name));
    expect(unrecorded.length).toBeLessThanOrEqual(16);
    expect(recorded.size).toBeGreaterThan(0);
    for (const name of recorded) expect(deleted).toContain(name);
  });
});
