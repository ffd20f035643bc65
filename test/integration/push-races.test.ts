/**
 * One image name, two contents: concurrent pushes of one name with different content (exactly one
 * wins, the other is refused), and replacements that fail (nothing is archived before the
 * replacement is stored), against the real engine and S3 server. The fault proxy holds requests
 * back or fails them so the interleavings happen on purpose.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { on, startFaultProxy, type FaultProxy, type ProxiedRequest } from "./fault-proxy.js";
import {
  buildImage,
  cliEnv,
  createAppRepo,
  createBucket,
  deleteBucket,
  docker,
  dockerBuild,
  getBytes,
  getText,
  imageId,
  listKeys,
  md5Hex,
  removeAppImages,
  removeDir,
  removeImage,
  runJson,
  runS3dock,
  storeSyntheticImage,
  uniqueName,
  writeConfig,
  type AppRepo,
  type RunResult,
} from "./harness.js";
import { sleep } from "./fault-server.js";

const APP = uniqueName("pushrace");
let bucket: string;
let env: Record<string, string>;
let repo: AppRepo;
let proxyA: FaultProxy;
let proxyB: FaultProxy;
let noRetries: string;

/** Makes `name` in the engine an image of other content; returns its ID. */
function retag(name: string, content: string): string {
  const scratch = `${APP}-scratch:${Math.random().toString(16).slice(2, 8)}`;
  const id = dockerBuild(scratch, { "content.txt": `${content}\n` });
  docker(["tag", scratch, name]);
  removeImage(scratch);
  return id;
}

const metadataKeyOf = (name: string) => async () => (await listKeys(bucket, `images/${APP}/`)).find((key) => key.endsWith(`${name.split(":")[1]}.json`));

async function waitFor<T>(what: string, probe: () => T | undefined, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

beforeAll(async () => {
  bucket = await createBucket("s3dock-pushrace");
  env = cliEnv(bucket);
  repo = createAppRepo({ textBytes: 64 * 1024 });
  proxyA = await startFaultProxy();
  proxyB = await startFaultProxy();
  noRetries = writeConfig("{ defaults: { retry_count: 0 } }\n");
});

afterAll(async () => {
  await proxyA?.close();
  await proxyB?.close();
  removeAppImages(APP);
  if (repo) removeDir(repo.dir);
  if (bucket) await deleteBucket(bucket);
});

describe("concurrent pushes of one name with different content", () => {
  it("exactly one wins; the other is refused with a conflict, and the stored pair is the winner's", async () => {
    repo.commit("www/index.html", "race one\n");
    const name = await buildImage(APP, repo, env);
    const firstId = imageId(name);
    // The first push's metadata write is held back, so the second push runs entirely inside the
    // first one's window (today's bug: both exit 0 and one image is silently gone).
    proxyA.setRules([{ match: on("PUT", /^images\/.*\.json$/), action: { kind: "delay", ms: 4000 } }]);
    proxyB.setRules([]);
    const first = runJson(["push", name], { env: cliEnv(bucket, { AWS_ENDPOINT_URL: proxyA.endpoint }) });
    await waitFor("the first push's metadata write", () => proxyA.seen.find((r) => r.method === "PUT" && /^images\/.*\.json$/.test(r.key)));
    // Its export is done: the name can now mean other content in the engine.
    const secondId = retag(name, `race two ${Date.now()}`);
    const second = await runJson(["push", name], { env: cliEnv(bucket, { AWS_ENDPOINT_URL: proxyB.endpoint }) });
    const results: (RunResult & { doc: Record<string, any> })[] = [await first, second];

    const winners = results.filter((result) => result.code === 0);
    expect(winners, results.map((r) => r.stdout + r.stderr).join("\n")).toHaveLength(1);
    const loser = results.find((result) => result.code !== 0)!;
    expect(loser.code).toBe(1);
    expect(loser.doc).toMatchObject({ success: false, error_type: "conflict" });
    expect(loser.doc.error).toMatch(/another push of .* with different content|already stored with different content|stored other content under this name first/);

    const winnerId = winners[0]!.doc.data.image_id as string;
    expect([firstId, secondId]).toContain(winnerId);
    const metadataKey = (await metadataKeyOf(name)())!;
    const metadata = JSON.parse(await getText(bucket, metadataKey));
    expect(metadata.image_id).toBe(winnerId);
    // The object is the one the metadata describes: no mix of the two pushes.
    expect(md5Hex(await getBytes(bucket, metadataKey.replace(/\.json$/, ".tar.gz")))).toBe(metadata.checksum);
    expect(await listKeys(bucket, ".s3dock/push-claims/")).toEqual([]);

    // And it pulls as the winner's image.
    removeImage(name);
    const pulled = await runS3dock(["pull", APP, name.split(":")[1]!], { env });
    expect(pulled.code, pulled.stderr).toBe(0);
    expect(imageId(name)).toBe(winnerId);
  });

  it("the same image pushed twice at once: both succeed, the stored pair is consistent", async () => {
    repo.commit("www/index.html", "same twice\n");
    const name = await buildImage(APP, repo, env);
    proxyA.setRules([{ match: on("PUT", /^images\/.*\.json$/), action: { kind: "delay", ms: 2000 } }]);
    const results = await Promise.all([
      runJson(["push", name], { env: cliEnv(bucket, { AWS_ENDPOINT_URL: proxyA.endpoint }) }),
      runJson(["push", name], { env }),
    ]);
    expect(results.map((r) => r.code), results.map((r) => r.stderr).join("\n")).toEqual([0, 0]);
    const metadataKey = (await metadataKeyOf(name)())!;
    const metadata = JSON.parse(await getText(bucket, metadataKey));
    expect(metadata.image_id).toBe(imageId(name));
    expect(md5Hex(await getBytes(bucket, metadataKey.replace(/\.json$/, ".tar.gz")))).toBe(metadata.checksum);
  });
});

describe("nothing is archived before the replacement is stored", () => {
  let name: string;
  let metadataKey: string;

  beforeAll(async () => {
    repo.commit("www/index.html", "to be replaced\n");
    name = await buildImage(APP, repo, env);
    const pushed = await runS3dock(["push", name], { env });
    expect(pushed.code, pushed.stderr).toBe(0);
    metadataKey = (await metadataKeyOf(name)())!;
    retag(name, `replacement ${Date.now()}`);
  });

  /** Uploads of image content (not server-side copies): the export never gets stored. */
  const uploads = (r: ProxiedRequest) => r.method === "PUT" && r.key.endsWith(".tar.gz") && r.headers["x-amz-copy-source"] === undefined;

  async function expectUnchanged(before: { metadata: string; object: Buffer }): Promise<void> {
    expect(await listKeys(bucket, `archive/${APP}/`)).toEqual([]);
    expect(await getText(bucket, metadataKey)).toBe(before.metadata);
    expect((await getBytes(bucket, metadataKey.replace(/\.json$/, ".tar.gz"))).equals(before.object)).toBe(true);
  }

  it("a push of other content whose upload fails has archived nothing and changed nothing", async () => {
    const before = { metadata: await getText(bucket, metadataKey), object: await getBytes(bucket, metadataKey.replace(/\.json$/, ".tar.gz")) };
    proxyA.setRules([{ match: uploads, action: { kind: "fail", status: 500 }, times: 100 }]);
    const result = await runS3dock(["--config", noRetries, "push", name], { env: cliEnv(bucket, { AWS_ENDPOINT_URL: proxyA.endpoint }) });
    expect(result.code).toBe(1);
    await expectUnchanged(before);
  });

  it("push --force whose upload fails has archived nothing and changed nothing", async () => {
    const before = { metadata: await getText(bucket, metadataKey), object: await getBytes(bucket, metadataKey.replace(/\.json$/, ".tar.gz")) };
    proxyA.setRules([{ match: uploads, action: { kind: "fail", status: 500 }, times: 100 }]);
    const result = await runS3dock(["--config", noRetries, "push", "--force", name], { env: cliEnv(bucket, { AWS_ENDPOINT_URL: proxyA.endpoint }) });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^s3dock: cannot upload/m);
    expect(proxyA.fired[0]).toBeGreaterThan(0);
    await expectUnchanged(before);
  });

  it("tag --force whose tag write fails has archived nothing; two replacements in one minute keep two archives", async () => {
    const images = await Promise.all([1, 2, 3].map((i) => storeSyntheticImage(bucket, APP, 500 + i)));
    expect((await runS3dock(["tag", images[0]!.name, "v9.0.0"], { env })).code).toBe(0);
    proxyA.setRules([{ match: on("PUT", `tags/${APP}/v9.0.0.json`), action: { kind: "fail", status: 500 }, times: 100 }]);
    const failed = await runS3dock(["--config", noRetries, "tag", "--force", images[1]!.name, "v9.0.0"], { env: cliEnv(bucket, { AWS_ENDPOINT_URL: proxyA.endpoint }) });
    expect(failed.code).toBe(1);
    expect(await listKeys(bucket, `archive/${APP}/tags/`)).toEqual([]);
    expect(JSON.parse(await getText(bucket, `tags/${APP}/v9.0.0.json`)).target_path).toBe(images[0]!.key);

    for (const image of images.slice(1)) expect((await runS3dock(["tag", "--force", image.name, "v9.0.0"], { env })).code).toBe(0);
    const archived = await listKeys(bucket, `archive/${APP}/tags/`);
    expect(archived).toHaveLength(2);
    const targets = await Promise.all(archived.map(async (key) => JSON.parse(await getText(bucket, key)).target_path));
    expect(targets.sort()).toEqual([images[0]!.key, images[1]!.key].sort());
  });
});
