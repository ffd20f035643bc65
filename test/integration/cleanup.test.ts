/**
 * cleanup local and remote against the real engine and S3 server: the dry run lists exactly what
 * --yes then removes, and nothing a tag, an env pointer or a container uses goes.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  buildImage,
  cliEnv,
  createAppRepo,
  createBucket,
  deleteBucket,
  docker,
  imageExists,
  listKeys,
  removeAppImages,
  removeDir,
  runJson,
  runS3dock,
  uniqueName,
  type AppRepo,
} from "./harness.js";

const app = uniqueName("cleanuptest");
const holder = `${app}-holder`;
let bucket: string;
let cli: Record<string, string>;
let repo: AppRepo;
/** The app's images, newest tag first. */
let images: string[];

const run = (args: string[]) => runS3dock(args, { env: cli });
const json = (args: string[]) => runJson(args, { env: cli });
const imageKeys = async () => (await listKeys(bucket, `images/${app}/`)).filter((key) => key.endsWith(".tar.gz"));

beforeAll(async () => {
  bucket = await createBucket("s3dock-cleanup");
  cli = cliEnv(bucket);
  repo = createAppRepo({ textBytes: 2000 });
  const built: string[] = [];
  for (let i = 0; i < 5; i++) {
    repo.commit("www/index.html", `version ${i}\n`);
    built.push(await buildImage(app, repo, cli));
  }
  images = built.sort().reverse();
  for (const image of images) {
    const pushed = await run(["push", image]);
    expect(pushed.code, pushed.stderr).toBe(0);
  }
  expect((await run(["tag", images[1]!, "v1.0.0"])).code).toBe(0);
  expect((await run(["promote", images[2]!, "production"])).code).toBe(0);
}, 300_000);

// The shared S3 server has taken over a minute to delete a bucket under load.
afterAll(async () => {
  try {
    docker(["rm", "-f", holder]);
  } catch {
    // not there
  }
  removeAppImages(app);
  if (repo) removeDir(repo.dir);
  if (bucket) await deleteBucket(bucket);
}, 600_000);

describe("cleanup remote", () => {
  it("archives unreferenced images between the two ages", async () => {
    const { code, doc, stderr } = await json(["cleanup", "remote", app, "--keep", "4", "--older-than", "1d", "--archive-older-than", "0s", "--yes"]);
    expect(code, stderr).toBe(0);
    expect(doc.data.deleted.map((c: { image: string; action: string }) => [c.image, c.action])).toEqual([[images[4], "archive"]]);
    expect(doc.data.bytes_freed).toBe(0);
    const archived = await listKeys(bucket, `archive/${app}/`);
    expect(archived).toHaveLength(2);
    expect(archived.some((key) => key.endsWith(".json")) && archived.some((key) => key.endsWith(".tar.gz"))).toBe(true);
    expect((await imageKeys()).some((key) => key.includes(images[4]!.split(":")[1]!))).toBe(false);
  });

  it("deletes in --yes mode exactly what the dry run listed, and nothing referenced", async () => {
    const before = await listKeys(bucket);
    const dry = await json(["cleanup", "remote", app, "--keep", "1", "--older-than", "0s"]);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.doc.data.dry_run).toBe(true);
    const listed = dry.doc.data.candidates.map((c: { image: string }) => c.image);
    expect(listed).toEqual([images[3]]);
    expect(dry.doc.data.skipped).toEqual(
      expect.arrayContaining([
        { image: images[0], reason: "among the newest 1" },
        { image: images[1], reason: "named by tag v1.0.0" },
        { image: images[2], reason: "named by environment production" },
      ]),
    );
    expect(dry.doc.data.bytes_freed).toBeGreaterThan(0);
    expect(await listKeys(bucket)).toEqual(before);
    const text = await run(["cleanup", "remote", app, "--keep", "1", "--older-than", "0s"]);
    expect(text.stdout).toContain(`would delete ${images[3]} (`);
    expect(text.stdout).toContain("dry run: pass --yes to delete");

    const real = await json(["cleanup", "remote", app, "--keep", "1", "--older-than", "0s", "--yes"]);
    expect(real.code, real.stderr).toBe(0);
    expect(real.doc.data.deleted.map((c: { image: string }) => c.image)).toEqual(listed);
    expect(real.doc.data.bytes_freed).toBe(dry.doc.data.bytes_freed);
    const left = await imageKeys();
    expect(left).toHaveLength(3);
    for (const image of images.slice(0, 3)) expect(left.some((key) => key.includes(image.split(":")[1]!))).toBe(true);
    expect((await listKeys(bucket, `images/${app}/`)).some((key) => key.includes(images[3]!.split(":")[1]!))).toBe(false);
    expect((await run(["pull", app, "production"])).code).toBe(0);
    expect((await listKeys(bucket, `audit/${app}/`)).some((key) => key.includes("-cleanup-"))).toBe(true);
  });
});

describe("cleanup local", () => {
  it("removes older images, never one a container uses or an env pointer names", async () => {
    docker(["create", "--name", holder, images[3]!]);
    const dry = await json(["cleanup", "local", app, "--keep", "1", "--dry-run"]);
    expect(dry.code, dry.stderr).toBe(0);
    expect([...dry.doc.data.removed].sort()).toEqual([images[1], images[4]].sort());
    for (const image of images) expect(imageExists(image)).toBe(true);

    const real = await json(["cleanup", "local", app, "--keep", "1"]);
    expect(real.code, real.stderr).toBe(0);
    expect(real.doc.data.removed).toEqual(dry.doc.data.removed);
    expect(images.map(imageExists)).toEqual([true, false, true, true, false]);
  });
});
