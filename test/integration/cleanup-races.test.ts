/**
 * `cleanup remote` racing promote, tag, push ("already stored: skipped") and pull. Each step of
 * either side is held back in turn by a fault proxy in front of the real S3 server while the other
 * side runs to its end. Whatever the interleaving: no tag or pointer names a missing (or
 * marked) image, and no command reports success for an image that is then gone.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { on, startFaultProxy, type FaultProxy, type FaultRule, type ProxiedRequest } from "./fault-proxy.js";
import { sleep } from "./fault-server.js";
import {
  buildImage,
  cliEnv,
  createAppRepo,
  createBucket,
  deleteBucket,
  getText,
  imageExists,
  listKeys,
  removeAppImages,
  removeDir,
  removeImage,
  runS3dock,
  s3,
  storeSyntheticImage,
  uniqueName,
  type AppRepo,
  type RunResult,
} from "./harness.js";
import { HeadObjectCommand } from "@aws-sdk/client-s3";

const HOLD_MS = 2500;
let bucket: string;
let proxy: FaultProxy;

/** The nth request (1-based) that `match` accepts. */
function nth(n: number, match: (request: ProxiedRequest) => boolean): (request: ProxiedRequest) => boolean {
  let seen = 0;
  return (request) => match(request) && ++seen === n;
}

const listing = (prefix: string) => (request: ProxiedRequest) => request.method === "GET" && request.key === "" && (request.query.get("prefix") ?? "").startsWith(prefix);

/** Where cleanup can be held back, as requests it sends (for the image's app). */
function cleanupSteps(app: string): Record<string, (request: ProxiedRequest) => boolean> {
  return {
    "before it marks the image": on("PUT", new RegExp(`^images/${app}/.*\\.json$`)),
    "before it reads references again": nth(2, listing(`tags/${app}/`)),
    "before it deletes the object": on("DELETE", new RegExp(`^images/${app}/.*\\.tar\\.gz$`)),
    "before it deletes the metadata": on("DELETE", new RegExp(`^images/${app}/.*\\.json$`)),
    "before its first delete": nth(1, (r) => r.method === "DELETE" && r.key.startsWith(`images/${app}/`)),
  };
}

async function objectExists(key: string): Promise<boolean> {
  try {
    await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    return true;
  } catch {
    return false;
  }
}

/** The image key a tag or pointer ends at, following tags. */
async function resolve(key: string): Promise<string> {
  let document = JSON.parse(await getText(bucket, key)) as { target_type: string; target_path: string };
  while (document.target_type === "tag") document = JSON.parse(await getText(bucket, document.target_path));
  return document.target_path;
}

/** No tag or pointer of the app names a missing or marked image. */
async function expectReferencesResolve(app: string): Promise<void> {
  for (const key of [...(await listKeys(bucket, `tags/${app}/`)), ...(await listKeys(bucket, `pointers/${app}/`))]) {
    const imageKey = await resolve(key);
    expect(await objectExists(imageKey), `${key} names ${imageKey}, whose object is gone`).toBe(true);
    const metadataKey = imageKey.replace(/\.tar\.gz$/, ".json");
    expect(await objectExists(metadataKey), `${key} names ${imageKey}, whose metadata is gone`).toBe(true);
    expect(JSON.parse(await getText(bucket, metadataKey)).deleting, `${key} names ${imageKey}, still marked for deletion`).toBeUndefined();
  }
}

async function imageStored(key: string): Promise<boolean> {
  const metadataKey = key.replace(/\.tar\.gz$/, ".json");
  if (!(await objectExists(key)) || !(await objectExists(metadataKey))) return false;
  return JSON.parse(await getText(bucket, metadataKey)).deleting === undefined;
}

/** Waits until the proxy has received a request the rule matches (it is then being held back), or the command ended. */
async function untilHeld(proxyUsed: FaultProxy, done: () => boolean): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (proxyUsed.fired[0] === 0 && !done() && Date.now() < deadline) await sleep(20);
}

function cleanupArgs(app: string): string[] {
  return ["cleanup", "remote", app, "--older-than", "0s", "--keep", "0", "--yes"];
}

/**
 * Runs `held` through the proxy with `rule`, and once it is held at that step runs `other` to its
 * end directly; then lets `held` go on.
 */
async function race(held: { args: string[]; rule: FaultRule["match"] }, other: string[]): Promise<{ held: RunResult; other: RunResult }> {
  proxy.setRules([{ match: held.rule, action: { kind: "delay", ms: HOLD_MS } }]);
  let finished = false;
  const heldRun = runS3dock(held.args, { env: cliEnv(bucket, { AWS_ENDPOINT_URL: proxy.endpoint }) }).then((result) => {
    finished = true;
    return result;
  });
  await untilHeld(proxy, () => finished);
  const otherResult = await runS3dock(other, { env: cliEnv(bucket) });
  return { held: await heldRun, other: otherResult };
}

beforeAll(async () => {
  bucket = await createBucket("s3dock-cleanrace");
  proxy = await startFaultProxy();
});

afterAll(async () => {
  await proxy?.close();
  if (bucket) await deleteBucket(bucket);
});

/** The reference-writing commands, as (app, image, n) → args. */
const writers: Record<string, (app: string, image: string, n: number) => string[]> = {
  promote: (_app, image) => ["promote", image, "production"],
  tag: (_app, image, n) => ["tag", image, `v1.0.${n}`],
};

describe.each(Object.keys(writers))("cleanup remote racing %s", (command) => {
  const write = writers[command]!;
  let n = 0;

  async function expectOutcome(app: string, image: { key: string }, result: RunResult): Promise<void> {
    await expectReferencesResolve(app);
    if (result.code === 0) {
      // A success report stands: the image is there, and the reference names it.
      expect(await imageStored(image.key), `${command} succeeded but its image is gone:\n${result.stderr}`).toBe(true);
      expect([...(await listKeys(bucket, `tags/${app}/`)), ...(await listKeys(bucket, `pointers/${app}/`))]).toHaveLength(1);
    } else {
      expect(result.code).toBe(1);
      expect(result.stderr).toMatch(/^s3dock: .*(being deleted by cleanup remote|was deleted|is not in s3:\/\/)/m);
      expect([...(await listKeys(bucket, `tags/${app}/`)), ...(await listKeys(bucket, `pointers/${app}/`))]).toEqual([]);
    }
  }

  it.each(Object.keys(cleanupSteps("x")))(`with cleanup held %s`, async (step) => {
    const app = uniqueName("cr");
    const image = await storeSyntheticImage(bucket, app, ++n);
    const { other } = await race({ args: cleanupArgs(app), rule: cleanupSteps(app)[step]! }, write(app, image.name, n));
    await expectOutcome(app, image, other);
  });

  it.each(["before it writes the reference", "before it checks the image again"])(`with ${command} held %s`, async (step) => {
    const app = uniqueName("cr");
    const image = await storeSyntheticImage(bucket, app, ++n);
    const metadata = image.metadataKey;
    const rule = step === "before it writes the reference" ? (r: ProxiedRequest) => r.method === "PUT" && /^(tags|pointers)\//.test(r.key) : nth(2, on("GET", metadata));
    const { held } = await race({ args: write(app, image.name, n), rule }, cleanupArgs(app));
    await expectOutcome(app, image, held);
  });
});

describe("cleanup remote racing push (already stored: skipped) and pull", () => {
  const app = uniqueName("cr-push");
  let repo: AppRepo;
  let image: string;
  let imageKey: string;

  beforeAll(async () => {
    repo = createAppRepo();
    image = await buildImage(app, repo, cliEnv(bucket));
  });

  afterAll(() => {
    removeAppImages(app);
    if (repo) removeDir(repo.dir);
  });

  async function pushFresh(): Promise<void> {
    // A pull that lost its race leaves the engine without the image: build it again (same commit, same tag).
    if (!imageExists(image)) expect(await buildImage(app, repo, cliEnv(bucket))).toBe(image);
    const pushed = await runS3dock(["push", image], { env: cliEnv(bucket) });
    expect(pushed.code, pushed.stderr).toBe(0);
    imageKey = (await listKeys(bucket, `images/${app}/`)).find((key) => key.endsWith(".tar.gz"))!;
  }

  it.each(Object.keys(cleanupSteps("x")))("push with cleanup held %s: skipped means it stays stored", async (step) => {
    await pushFresh();
    const { other: pushed, held: cleaned } = await race({ args: cleanupArgs(app), rule: cleanupSteps(app)[step]! }, ["push", image]);
    expect(cleaned.code, cleaned.stderr).toBe(0);
    if (pushed.code === 0) {
      expect(await imageStored(imageKey), `push said:\n${pushed.stderr}\nbut the image is gone`).toBe(true);
    } else {
      expect(pushed.code).toBe(1);
      expect(pushed.stderr).toMatch(/^s3dock: .*being deleted by cleanup remote.*push it again once that cleanup has finished/m);
    }
  });

  it.each(Object.keys(cleanupSteps("x")))("pull of the image with cleanup held %s: loaded and verified, or one clear line", async (step) => {
    await pushFresh();
    removeImage(image);
    const { other: pulled } = await race({ args: cleanupArgs(app), rule: cleanupSteps(app)[step]! }, ["pull", app, image.split(":")[1]!]);
    if (pulled.code === 0) {
      expect(imageExists(image)).toBe(true);
    } else {
      expect(pulled.code).toBe(1);
      expect(pulled.stderr).toMatch(/^s3dock: .*(being deleted by cleanup remote|is not in s3:\/\/|does not exist)/m);
      expect(pulled.stderr).not.toMatch(/does not match|not a valid image archive/);
    }
  });
});
