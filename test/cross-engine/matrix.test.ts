/**
 * A bucket written through any engine is usable from any other: images pushed through Docker 20.10,
 * Docker 28 on the graphdriver store and Docker 28 on the containerd image store, in both storage
 * formats, are pulled into each of the others (verified, then run), re-pushed from there as "already
 * stored", and deployed on each.
 * scripts/test.sh runs this with every engine up (S3DOCK_TEST_ENGINES, S3DOCK_TEST_DOCKER_*).
 */
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cliEnv, createAppRepo, createBucket, deleteBucket, removeDir, runJson, runS3dock, uniqueName, type AppRepo } from "../integration/harness.js";

const engines = (process.env.S3DOCK_TEST_ENGINES ?? "20.10 28-graphdriver 28-containerd").split(/\s+/).filter(Boolean);
const hostOf = (engine: string): string => {
  const host = process.env[`S3DOCK_TEST_DOCKER_${engine.toUpperCase().replace(/[.-]/g, "_")}`];
  if (!host) throw new Error(`no DOCKER_HOST for engine ${engine}: run the suite with scripts/test.sh (make test)`);
  return host;
};
const dockerOn = (engine: string, args: readonly string[]): string =>
  execFileSync("docker", args, { encoding: "utf8", env: { ...process.env, DOCKER_HOST: hostOf(engine) }, stdio: ["ignore", "pipe", "pipe"] }).trim();
const removeFrom = (engine: string, reference: string): void => {
  try {
    dockerOn(engine, ["rmi", "-f", reference]);
  } catch {
    // not there
  }
};

const FORMATS = ["layers", "archive"] as const;
type Format = (typeof FORMATS)[number];
const appOf = { layers: uniqueName("crosslayers"), archive: uniqueName("crossarchive") } as const;
const network = uniqueName("s3dock-cross-net");
let bucket: string;
let repo: AppRepo;
let configFile: string;
/** The image built and pushed through each engine in each format, and what it serves. */
const pushed = new Map<string, { image: string; content: string }>();
const env = (engine: string, format: Format) => cliEnv(bucket, { DOCKER_HOST: hostOf(engine), S3DOCK_STORAGE_FORMAT: format });

beforeAll(async () => {
  bucket = await createBucket("s3dock-cross");
  repo = createAppRepo();
  configFile = join(repo.dir, "..", `${appOf.layers}.json5`);
  const deploySettings = { port: 8080, network, drain_seconds: 0, stop_timeout_seconds: 1 };
  writeFileSync(configFile, JSON.stringify({ deploy: { apps: { [appOf.layers]: deploySettings, [appOf.archive]: deploySettings } } }));
  for (const format of FORMATS) {
    for (const engine of engines) {
      const content = `built through Docker ${engine}, stored as ${format}\n`;
      repo.commit("www/index.html", content);
      const build = await runS3dock(["build", appOf[format]], { env: env(engine, format), cwd: repo.dir });
      expect(build.code, build.stderr).toBe(0);
      const image = build.stdout.trim();
      const push = await runJson(["push", image], { env: env(engine, format) });
      expect(push.code, push.stderr).toBe(0);
      expect(push.doc.data).toMatchObject({ skipped: false, format });
      pushed.set(`${format} ${engine}`, { image, content });
    }
  }
}, 600_000);

afterAll(async () => {
  for (const engine of engines) {
    for (const app of Object.values(appOf)) {
      for (const id of dockerOn(engine, ["ps", "-aq", "--filter", `label=s3dock.app=${app}`]).split("\n").filter(Boolean)) dockerOn(engine, ["rm", "-f", id]);
    }
    try {
      dockerOn(engine, ["network", "rm", network]);
    } catch {
      // not there
    }
    for (const { image } of pushed.values()) removeFrom(engine, image);
  }
  if (repo) removeDir(repo.dir);
  if (configFile) removeDir(configFile);
  if (bucket) await deleteBucket(bucket);
}, 600_000);

const pairs = FORMATS.flatMap((format) => engines.flatMap((from) => engines.filter((to) => to !== from).map((to) => [format, from, to] as const)));

describe.each(pairs)("%s format: pushed through Docker %s, used through Docker %s", (format, from, to) => {
  it("pulls verified, runs, skips the second pull, and a re-push from there is 'already stored'", async () => {
    const { image, content } = pushed.get(`${format} ${from}`)!;
    const app = appOf[format];
    removeFrom(to, image);
    const tag = image.slice(app.length + 1);
    const pull = await runJson(["pull", app, tag], { env: env(to, format) });
    expect(pull.code, pull.stderr).toBe(0);
    expect(pull.doc.data).toMatchObject({ image_ref: image, skipped: false });
    expect(dockerOn(to, ["run", "--rm", "--entrypoint", "/bin/busybox", image, "cat", "/www/index.html"])).toBe(content.trim());

    const again = await runJson(["pull", app, tag], { env: env(to, format) });
    expect(again.code, again.stderr).toBe(0);
    expect(again.doc.data.skipped).toBe(true);

    const repush = await runJson(["push", image], { env: env(to, format) });
    expect(repush.code, repush.stderr).toBe(0);
    expect(repush.doc.data).toMatchObject({ skipped: true, archived: false });
  });
});

// Each engine deploys the image pushed (as layers) through the engine before it in the list.
describe.each(engines.map((to, i) => [engines[(i + engines.length - 1) % engines.length]!, to] as const))(
  "deploy of an image pushed through Docker %s on Docker %s",
  (from, to) => {
    it("pulls the environment's image and makes it live", async () => {
      const { image } = pushed.get(`layers ${from}`)!;
      const app = appOf.layers;
      removeFrom(to, image);
      const environment = `env-${to.replace(/\./g, "")}`;
      const promote = await runS3dock(["promote", image, environment], { env: env(to, "layers") });
      expect(promote.code, promote.stderr).toBe(0);
      const deploy = await runJson(["--config", configFile, "deploy", "--blue-green", app, environment], { env: env(to, "layers") });
      expect(deploy.code, deploy.stderr).toBe(0);
      expect(deploy.doc.data).toMatchObject({ image, color: "blue", skipped: false });
      const live = dockerOn(to, ["ps", "--filter", `label=s3dock.env=${environment}`, "--format", '{{.State}} {{.Label "s3dock.image"}}']);
      expect(live).toBe(`running ${image}`);
    });
  },
);
