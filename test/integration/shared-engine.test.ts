/**
 * One Docker engine shared by apps whose names run together: app `X-api` env `prod` and app `X` env
 * `api-prod` were both `X-api-prod-blue`, with one alias and one lock between them. On the real
 * engine: they deploy side by side, one after the other and at once; a container an earlier version
 * deployed is taken over by its labels with its alias kept; a container that is not the app's is
 * never removed, even under the name the deploy wants.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  buildImage,
  cliEnv,
  createAppRepo,
  createBucket,
  createNetwork,
  deleteBucket,
  docker,
  errorLines,
  removeAppImages,
  removeDir,
  runS3dock,
  uniqueName,
  type AppRepo,
} from "./harness.js";

const base = uniqueName("lane");
const appA = `${base}-api`;
const appB = base;
const network = uniqueName("s3dock-lane-net");
const foreign = `${appB}.other.blue`;
let bucket: string;
let cli: Record<string, string>;
let repo: AppRepo;
let configFile: string;
const images: Record<"a1" | "a2" | "b1" | "b2", string> = { a1: "", a2: "", b1: "", b2: "" };

const run = (args: string[]) => runS3dock(["--config", configFile, ...args], { env: cli });

/** What a DNS name on the network answers (a proxy's view). */
const fetchName = (name: string): string =>
  docker(["run", "--rm", "--network", network, "--entrypoint", "/bin/busybox", images.a1, "wget", "-q", "-O", "-", `http://${name}:8080/`]);

function containers(app: string, env: string): { name: string; image: string; state: string }[] {
  const out = docker(["ps", "-a", "--filter", `label=s3dock.app=${app}`, "--filter", `label=s3dock.env=${env}`, "--format", '{{.Names}}|{{.Label "s3dock.image"}}|{{.State}}']);
  return out === "" ? [] : out.split("\n").map((line) => {
    const [name, image, state] = line.split("|") as [string, string, string];
    return { name, image, state };
  });
}

async function release(image: string, env: string): Promise<void> {
  const result = await run(["promote", image, env]);
  expect(result.code, result.stderr).toBe(0);
}

beforeAll(async () => {
  bucket = await createBucket("s3dock-lanes");
  cli = cliEnv(bucket);
  repo = createAppRepo();
  for (const [key, app, content] of [["a1", appA, "app A one"], ["a2", appA, "app A two"], ["b1", appB, "app B one"], ["b2", appB, "app B two"]] as const) {
    repo.commit("www/index.html", `${content}\n`);
    images[key] = await buildImage(app, repo, cli);
    const pushed = await runS3dock(["push", images[key]], { env: cli });
    expect(pushed.code, pushed.stderr).toBe(0);
  }
  configFile = join(repo.dir, "..", `${base}.json5`);
  const settings = JSON.stringify({ port: 8080, network, drain_seconds: 0, stop_timeout_seconds: 1 });
  writeFileSync(configFile, `{ deploy: { apps: { "${appA}": ${settings}, "${appB}": ${settings} } } }`);
  createNetwork(network);
}, 300_000);

afterAll(async () => {
  for (const app of [appA, appB]) {
    const ids = docker(["ps", "-aq", "--filter", `label=s3dock.app=${app}`]);
    if (ids) docker(["rm", "-f", ...ids.split("\n")]);
  }
  try {
    docker(["rm", "-f", foreign]);
  } catch {
    // not there
  }
  try {
    docker(["network", "rm", network]);
  } catch {
    // not there
  }
  removeAppImages(appA);
  removeAppImages(appB);
  if (repo) removeDir(repo.dir);
  if (configFile) removeDir(configFile);
  if (bucket) await deleteBucket(bucket);
}, 300_000);

describe("apps whose names ran together", () => {
  it("deploy one after the other without the second touching the first", async () => {
    await release(images.a1, "prod");
    await release(images.b1, "api-prod");
    const first = await run(["deploy", appA, "prod"]);
    expect(first.code, first.stderr).toBe(0);
    const second = await run(["deploy", appB, "api-prod"]);
    expect(second.code, second.stderr).toBe(0);
    expect(containers(appA, "prod")).toEqual([{ name: `${appA}.prod.blue`, image: images.a1, state: "running" }]);
    expect(containers(appB, "api-prod")).toEqual([{ name: `${appB}.api-prod.blue`, image: images.b1, state: "running" }]);
    expect(fetchName(`${appA}.prod`)).toBe("app A one");
    expect(fetchName(`${appB}.api-prod`)).toBe("app B one");
  });

  it("deploy at the same moment: neither lock nor containers are shared", async () => {
    await release(images.a2, "prod");
    await release(images.b2, "api-prod");
    const [a, b] = await Promise.all([run(["deploy", appA, "prod"]), run(["deploy", appB, "api-prod"])]);
    expect(a.code, a.stderr).toBe(0);
    expect(b.code, b.stderr).toBe(0);
    expect(containers(appA, "prod")).toEqual([{ name: `${appA}.prod.green`, image: images.a2, state: "running" }]);
    expect(containers(appB, "api-prod")).toEqual([{ name: `${appB}.api-prod.green`, image: images.b2, state: "running" }]);
    expect(fetchName(`${appA}.prod`)).toBe("app A two");
    expect(fetchName(`${appB}.api-prod`)).toBe("app B two");
  });
});

describe("upgrading from an earlier version", () => {
  it("takes over the live container by its labels, keeps answering to the old alias, and retires the old container", async () => {
    // What an earlier s3dock left: the container under the dashed name, with the dashed aliases.
    docker([
      "run", "-d", "--name", `${appA}-staging-blue`, "--network", network, "--network-alias", `${appA}-staging`, "--network-alias", `${appA}-staging-blue`,
      "--label", `s3dock.app=${appA}`, "--label", "s3dock.env=staging", "--label", "s3dock.color=blue", "--label", `s3dock.image=${images.a1}`,
      "--label", "s3dock.deployed-at=2025-01-01T00:00:00.000Z", images.a1,
    ]);
    expect(fetchName(`${appA}-staging`)).toBe("app A one");
    await release(images.a2, "staging");
    const result = await run(["deploy", appA, "staging"]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toContain(`answers to ${appA}-staging, the default alias of earlier s3dock versions`);
    expect(containers(appA, "staging")).toEqual([{ name: `${appA}.staging.green`, image: images.a2, state: "running" }]);
    expect(fetchName(`${appA}-staging`)).toBe("app A two");
    expect(fetchName(`${appA}.staging`)).toBe("app A two");
  });
});

describe("containers that are not the app's", () => {
  it("are never removed, even under the name the deploy wants: the deploy refuses in one line", async () => {
    docker(["create", "--name", foreign, "--label", "owner=someone-else", images.b1]);
    await release(images.b1, "other");
    const result = await run(["deploy", appB, "other"]);
    expect(result.code).toBe(1);
    expect(errorLines(result.stderr)).toEqual([
      `s3dock: a container named ${foreign} exists, and its labels do not say it belongs to ${appB} other: not touching it (rename or remove it: docker rm ${foreign})`,
    ]);
    expect(docker(["inspect", "-f", "{{index .Config.Labels \"owner\"}}", foreign])).toBe("someone-else");
    expect(containers(appB, "other")).toEqual([]);
  });
});
