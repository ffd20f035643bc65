/**
 * deploy --blue-green / --rollback on the real engine: FROM-scratch busybox images serving HTTP, a
 * client container requesting the stable alias in a loop during the switch, a failing image, a
 * rollback, and two deploys at once.
 */
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  buildImage,
  cliEnv,
  createAppRepo,
  createNetwork,
  createBucket,
  deleteBucket,
  docker,
  listKeys,
  removeAppImages,
  removeDir,
  runJson,
  runS3dock,
  uniqueName,
  type AppRepo,
} from "./harness.js";

const app = uniqueName("deploytest");
const env = "production";
const network = uniqueName("s3dock-deploy-net");
const alias = `${app}.${env}`;
const client = `${app}-client`;
const hostPort = 20000 + Math.floor(Math.random() * 20000);
let bucket: string;
let cli: Record<string, string>;
let repo: AppRepo;
let configFile: string;
let v1: string;
let v2: string;
let bad: string;

const run = (args: string[]) => runS3dock(["--config", configFile, ...args], { env: cli });
const json = (args: string[]) => runJson(["--config", configFile, ...args], { env: cli });

/** What the alias answers, asked from a container on the network (the proxy's view). */
function fetchAlias(): string {
  return docker(["run", "--rm", "--network", network, "--entrypoint", "/bin/busybox", v1, "wget", "-q", "-O", "-", `http://${alias}:8080/`]);
}

function containersOfApp(): { name: string; image: string; color: string; state: string }[] {
  const out = docker(["ps", "-a", "--filter", `label=s3dock.app=${app}`, "--format", '{{.Names}}|{{.Label "s3dock.image"}}|{{.Label "s3dock.color"}}|{{.State}}']);
  return out === "" ? [] : out.split("\n").map((line) => {
    const [name, image, color, state] = line.split("|") as [string, string, string, string];
    return { name, image, color, state };
  });
}

async function pushImage(image: string): Promise<void> {
  const result = await runS3dock(["push", image], { env: cli });
  expect(result.code, result.stderr).toBe(0);
}

async function promote(image: string): Promise<void> {
  const result = await run(["promote", image, env]);
  expect(result.code, result.stderr).toBe(0);
}

beforeAll(async () => {
  bucket = await createBucket("s3dock-deploy");
  cli = cliEnv(bucket);
  // `busybox --install` gives the image a wget on PATH for the http_path health check.
  repo = createAppRepo({ dockerfileExtra: 'RUN ["/bin/busybox", "--install", "-s", "/bin"]' });
  repo.commit("www/health", "ok\n");
  repo.commit("www/index.html", "version one\n");
  v1 = await buildImage(app, repo, cli);
  repo.commit("www/index.html", "version two\n");
  v2 = await buildImage(app, repo, cli);
  execFileSync("git", ["rm", "-q", "www/health"], { cwd: repo.dir });
  repo.commit("www/index.html", "broken version\n");
  bad = await buildImage(app, repo, cli);
  configFile = join(repo.dir, "..", `${app}.json5`);
  writeFileSync(
    configFile,
    `{
      // the deploy section under test
      deploy: { apps: { "${app}": {
        port: 8080,
        health: { http_path: "/health", timeout_seconds: 30, interval_seconds: 0.5 },
        network: "${network}",
        drain_seconds: 1,
        stop_timeout_seconds: 2,
        memory: "64m",
        env: { GREETING: "hello" },
        envs: { staging: { publish: "127.0.0.1:${hostPort}:8080" } },
      } } },
    }`,
  );
  for (const image of [v1, v2, bad]) await pushImage(image);
  createNetwork(network);
}, 300_000);

// The shared S3 server has taken over a minute to delete a bucket under load.
afterAll(async () => {
  const ids = docker(["ps", "-aq", "--filter", `label=s3dock.app=${app}`]);
  for (const name of [...(ids ? ids.split("\n") : []), client, `${app}.${env}.s3dock-lock`]) {
    try {
      docker(["rm", "-f", name]);
    } catch {
      // not there
    }
  }
  try {
    docker(["network", "rm", network]);
  } catch {
    // not there
  }
  removeAppImages(app);
  if (repo) removeDir(repo.dir);
  if (configFile) removeDir(configFile);
  if (bucket) await deleteBucket(bucket);
}, 600_000);

describe("deploy --blue-green", () => {
  it("starts the first container and gives it the alias", async () => {
    await promote(v1);
    const { code, doc, stderr } = await json(["deploy", "--blue-green", app, env]);
    expect(code, stderr).toBe(0);
    expect(doc.data).toMatchObject({ app, env, image: v1, color: "blue", skipped: false, mode: "network" });
    expect(doc.data.previous_image).toBeUndefined();
    expect(doc.data.health_check_ms).toBeGreaterThan(0);
    console.log(`first deploy: healthy in ${doc.data.health_check_ms} ms`);
    expect(containersOfApp()).toEqual([{ name: `${app}.${env}.blue`, image: v1, color: "blue", state: "running" }]);
    expect(fetchAlias()).toBe("version one");
    const envs = docker(["inspect", "-f", "{{json .Config.Env}} {{.HostConfig.Memory}}", `${app}.${env}.blue`]);
    expect(envs).toContain("GREETING=hello");
    expect(envs).toContain(String(64 * 1024 * 1024));
  });

  it("switches to the next image with zero failed requests from a client looping on the alias", async () => {
    await promote(v2);
    docker([
      "run", "-d", "--name", client, "--network", network, "--entrypoint", "/bin/busybox", v1, "sh", "-c",
      `while true; do if wget -q -O /dev/null http://${alias}:8080/; then echo OK; else echo FAIL; fi; sleep 0.05; done`,
    ]);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const { code, stdout, stderr } = await run(["deploy", "--blue-green", app, env]);
    expect(code, stderr).toBe(0);
    expect(stdout).toMatch(new RegExp(`^${app} ${env}: ${v2} live on green \\(was ${v1}; healthy in \\d+\\.\\ds\\)\\n$`));
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const log = docker(["logs", client]);
    docker(["rm", "-f", client]);
    const ok = log.split("\n").filter((line) => line === "OK").length;
    const failed = log.split("\n").filter((line) => line === "FAIL").length;
    console.log(`client during the switch: ${ok} requests OK, ${failed} failed`);
    expect(failed).toBe(0);
    expect(ok).toBeGreaterThan(20);
    expect(fetchAlias()).toBe("version two");
    expect(containersOfApp()).toEqual([{ name: `${app}.${env}.green`, image: v2, color: "green", state: "running" }]);
  });

  it("does nothing when the image is already live", async () => {
    const { code, doc } = await json(["deploy", app, env]);
    expect(code).toBe(0);
    expect(doc.data).toMatchObject({ image: v2, color: "green", skipped: true });
    expect(containersOfApp()).toHaveLength(1);
  });

  it("leaves the old container serving and exits 1 when the new one fails its health check", async () => {
    await promote(bad);
    const started = Date.now();
    const { code, stderr } = await run(["deploy", "--blue-green", app, env]);
    console.log(`failing deploy refused after ${Date.now() - started} ms`);
    expect(code).toBe(1);
    expect(stderr).toContain(`the new container ${app}.${env}.blue failed its health check; the live container keeps serving`);
    expect(stderr).toContain("last health check output:");
    expect(containersOfApp()).toEqual([{ name: `${app}.${env}.green`, image: v2, color: "green", state: "running" }]);
    expect(fetchAlias()).toBe("version two");
  });

  it("rolls back to the previous image and moves the env pointer back", async () => {
    const { code, doc, stderr } = await json(["deploy", "--rollback", app, env]);
    expect(code, stderr).toBe(0);
    expect(doc.data).toMatchObject({ image: v1, previous_image: v2, color: "blue", skipped: false, pointer_moved: true });
    expect(fetchAlias()).toBe("version one");
    expect((await run(["current", app, env])).stdout.trim()).toBe(v1);
    expect(containersOfApp()).toEqual([{ name: `${app}.${env}.blue`, image: v1, color: "blue", state: "running" }]);
    const audit = await listKeys(bucket, `audit/${app}/`);
    // two deploys, one failed deploy (recorded with result "failed"), one rollback
    expect(audit.filter((key) => key.includes("-deploy-"))).toHaveLength(3);
    expect(audit.filter((key) => key.includes("-rollback-"))).toHaveLength(1);
  });

  it("refuses a second deploy of the same app and env while one runs", async () => {
    await promote(v2);
    const [first, second] = await Promise.all([run(["deploy", app, env]), run(["deploy", app, env])]);
    const codes = [first.code, second.code].sort();
    expect(codes, first.stderr + second.stderr).toEqual([0, 1]);
    expect(first.stderr + second.stderr).toContain("another deploy of");
    expect(containersOfApp()).toEqual([{ name: `${app}.${env}.green`, image: v2, color: "green", state: "running" }]);
  });

  it("lets a second deploy wait for the first with --wait-lock, then finds nothing to do", async () => {
    await promote(v1);
    const [first, second] = await Promise.all([json(["deploy", app, env, "--wait-lock", "60"]), json(["deploy", app, env, "--wait-lock", "60"])]);
    expect([first.code, second.code]).toEqual([0, 0]);
    expect([first.doc.data.skipped, second.doc.data.skipped].sort()).toEqual([false, true]);
    expect(containersOfApp()).toEqual([{ name: `${app}.${env}.blue`, image: v1, color: "blue", state: "running" }]);
  });
});

/** Requests the host port every 20 ms until stopped; returns the failures and the longest gap. */
function pollHostPort(): { stop: () => Promise<{ ok: number; failed: number; longestGapMs: number }> } {
  let running = true;
  const loop = (async () => {
    let ok = 0;
    let failed = 0;
    let gapStart: number | undefined;
    let longestGapMs = 0;
    while (running) {
      try {
        const response = await fetch(`http://127.0.0.1:${hostPort}/`, { signal: AbortSignal.timeout(2000) });
        await response.text();
        if (!response.ok) throw new Error(String(response.status));
        ok++;
        if (gapStart !== undefined) longestGapMs = Math.max(longestGapMs, Date.now() - gapStart);
        gapStart = undefined;
      } catch {
        failed++;
        gapStart ??= Date.now();
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    return { ok, failed, longestGapMs };
  })();
  return {
    stop: () => {
      running = false;
      return loop;
    },
  };
}

describe("deploy in host-port mode (publish)", () => {
  const staging = "staging";
  const hostGet = async () => (await (await fetch(`http://127.0.0.1:${hostPort}/`, { signal: AbortSignal.timeout(5000) })).text()).trim();

  it("moves the published port to the new container with a short gap", async () => {
    expect((await run(["promote", v1, staging])).code).toBe(0);
    const first = await json(["deploy", app, staging]);
    expect(first.code, first.stderr).toBe(0);
    expect(first.doc.data).toMatchObject({ mode: "publish", color: "blue", image: v1 });
    expect(await hostGet()).toBe("version one");

    expect((await run(["promote", v2, staging])).code).toBe(0);
    const poll = pollHostPort();
    await new Promise((resolve) => setTimeout(resolve, 300));
    const second = await json(["deploy", app, staging]);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const seen = await poll.stop();
    console.log(`publish mode switch: ${seen.ok} requests OK, ${seen.failed} failed, longest gap ${seen.longestGapMs} ms, health ${second.doc.data?.health_check_ms} ms`);
    expect(second.code, second.stderr).toBe(0);
    expect(second.doc.data).toMatchObject({ mode: "publish", color: "green", image: v2, previous_image: v1 });
    expect(await hostGet()).toBe("version two");
    expect(seen.ok).toBeGreaterThan(10);
    expect(seen.longestGapMs).toBeLessThan(10_000);
  });

  it("starts the old container again when the new one fails", async () => {
    expect((await run(["promote", bad, staging])).code).toBe(0);
    const result = await run(["deploy", app, staging]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("failed its health check");
    expect(await hostGet()).toBe("version two");
    const names = containersOfApp().filter((c) => c.name.includes(staging));
    expect(names).toEqual([{ name: `${app}.${staging}.green`, image: v2, color: "green", state: "running" }]);
  });
});
