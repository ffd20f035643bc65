/**
 * Credentials never reach stdout or stderr: every command, on success and failure paths, with
 * --json and at --log-level 3, with a distinctive secret key given through the environment and
 * through a config profile. The key is a real second key of the test user, so the success paths
 * really authenticate with it.
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  buildImage,
  cliEnv,
  createAppRepo,
  createBucket,
  deleteBucket,
  removeAppImages,
  removeDir,
  runS3dock,
  s3Settings,
  uniqueName,
  type AppRepo,
  type RunResult,
} from "./harness.js";

const APP = uniqueName("secrets");
const ACCESS_KEY = `SECRETSTEST${randomBytes(5).toString("hex").toUpperCase()}`;
const SECRET = `Zq9-s3dock-DISTINCTIVE-secret-${randomBytes(8).toString("hex")}`;
const WRONG_SECRET = `Wx7-s3dock-WRONG-secret-${randomBytes(8).toString("hex")}`;
const CEPH_ENV = { ...process.env, CEPH_CONF: `${process.env.RGW_DIR ?? "/tmp/s3dock-rgw"}/ceph.conf` };

let bucket: string;
let repo: AppRepo;
let dir: string;
let image: string;
const outputs: { args: string[]; result: RunResult }[] = [];

/** Config with the secret in the default profile and the wrong one in another profile. */
function writeConfig(): string {
  const file = join(dir, "s3dock.json5");
  writeFileSync(
    file,
    JSON.stringify({
      default_profile: "main",
      profiles: {
        main: { bucket, region: s3Settings.region, endpoint: s3Settings.endpoint, access_key: ACCESS_KEY, secret_key: SECRET },
        wrong: { bucket, region: s3Settings.region, endpoint: s3Settings.endpoint, access_key: ACCESS_KEY, secret_key: WRONG_SECRET },
      },
      defaults: { retry_count: 1 },
    }),
  );
  return file;
}

/** The CLI with no credentials in the environment: they come from the config file. */
function configEnv(): Record<string, string> {
  const env = cliEnv(bucket);
  delete env.AWS_ACCESS_KEY_ID;
  delete env.AWS_SECRET_ACCESS_KEY;
  delete env.AWS_ENDPOINT_URL;
  delete env.S3DOCK_BUCKET;
  return env;
}

async function run(args: string[], env: Record<string, string>, cwd?: string): Promise<RunResult> {
  const result = await runS3dock(args, { env, cwd });
  outputs.push({ args, result });
  return result;
}

beforeAll(async () => {
  // A second key pair for the test user: buckets the harness creates stay reachable with it.
  execFileSync("radosgw-admin", ["key", "create", `--uid=${s3Settings.accessKey}`, "--key-type=s3", `--access-key=${ACCESS_KEY}`, `--secret-key=${SECRET}`], {
    env: CEPH_ENV,
    stdio: "ignore",
  });
  bucket = await createBucket("s3dock-secrets");
  dir = mkdtempSync(join(tmpdir(), "s3dock-secrets-"));
  repo = createAppRepo();
  image = await buildImage(APP, repo, cliEnv(bucket));
});

afterAll(async () => {
  try {
    execFileSync("radosgw-admin", ["key", "rm", `--uid=${s3Settings.accessKey}`, "--key-type=s3", `--access-key=${ACCESS_KEY}`], { env: CEPH_ENV, stdio: "ignore" });
  } catch {
    // already removed
  }
  if (bucket) await deleteBucket(bucket);
  removeAppImages(APP);
  if (repo) removeDir(repo.dir);
  if (dir) removeDir(dir);
});

describe("the secret key never appears in output", () => {
  const tag = () => image.split(":")[1]!;
  const commands = (): string[][] => [
    ["push", image],
    ["tag", image, "v1.0.0"],
    ["tag", image, "v1.0.0"],
    ["promote", image, "staging"],
    ["promote", APP, "v1.0.0", "prod"],
    ["current", APP, "prod"],
    ["pull", "--force", APP, "prod"],
    ["pull", APP, "v9.9.9"],
    ["pull", APP, tag()],
    ["list", "apps"],
    ["list", "images", APP],
    ["list", "tags", APP],
    ["list", "envs", APP],
    ["list", "tag-for", APP, "prod"],
    ["config", "show"],
    ["config", "list"],
    ["version", "--full"],
    ["push", "nope:not-a-ref"],
    ["current", APP, "nowhere"],
    ["cleanup", "remote", APP],
  ];
  const variants: string[][] = [[], ["--log-level", "3"], ["--json", "--log-level", "3"]];

  it("with the secret in a config profile: every command, every output mode", async () => {
    const config = writeConfig();
    const env = configEnv();
    for (const variant of variants) {
      for (const args of commands()) await run(["--config", config, ...variant, ...args], env);
    }
    // The secret really authenticated: the success paths succeeded.
    const push = outputs.find((o) => o.args.includes("push") && o.args.includes(image))!;
    expect(push.result.code, push.result.stderr).toBe(0);
    expect(outputs.find((o) => o.args.at(-3) === "current")?.result.code ?? 0).toBe(0);
  });

  it("with the secret in AWS_SECRET_ACCESS_KEY, and a wrong one in the environment (403)", async () => {
    const env = cliEnv(bucket, { AWS_ACCESS_KEY_ID: ACCESS_KEY, AWS_SECRET_ACCESS_KEY: SECRET });
    for (const variant of variants) {
      for (const args of [["list", "images", APP], ["current", APP, "prod"], ["config", "show"], ["push", image]]) await run([...variant, ...args], env);
    }
    const wrong = cliEnv(bucket, { AWS_ACCESS_KEY_ID: ACCESS_KEY, AWS_SECRET_ACCESS_KEY: WRONG_SECRET });
    for (const variant of [...variants, ["--log-level", "1"], ["--json"]]) {
      const result = await run([...variant, "list", "images", APP], wrong);
      expect(result.code).toBe(1);
      expect(result.stderr).toContain("access denied");
    }
  });

  it("with the wrong secret in a config profile (403), every output mode", async () => {
    const config = writeConfig();
    for (const variant of variants) {
      const result = await run(["--config", config, "--profile", "wrong", ...variant, "pull", APP, "prod"], configEnv());
      expect(result.code).toBe(1);
      expect(result.stderr).toContain("access denied");
      const shown = await run(["--config", config, "--profile", "wrong", ...variant, "config", "show"], configEnv());
      expect(shown.code).toBe(0);
    }
  });

  it("appears nowhere in what those runs printed", () => {
    expect(outputs.length).toBeGreaterThan(70);
    for (const { args, result } of outputs) {
      for (const secret of [SECRET, WRONG_SECRET, SECRET.slice(-16), WRONG_SECRET.slice(-16)]) {
        expect(result.stdout.includes(secret), `stdout of ${args.join(" ")}`).toBe(false);
        expect(result.stderr.includes(secret), `stderr of ${args.join(" ")}`).toBe(false);
      }
    }
    // The debug runs did log at debug level, so the check above had material to look at.
    expect(outputs.filter((o) => o.result.stderr.includes("[DEBUG]")).length).toBeGreaterThanOrEqual(5);
  });
});
