import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { runCli } from "../../src/cli/app.js";
import { STARTER_CONFIG } from "../../src/cli/commands/config.js";
import { TOOL_VERSION } from "../../src/cli/version.js";
import { parseConfigText } from "../../src/config/loader.js";

const CONFIGS = resolve(import.meta.dirname, "../../test-configs");
const root = mkdtempSync(join(tmpdir(), "s3dock-cli-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  /** What went to the process's own stderr: the logger writes there. */
  readonly logs: string;
}

let processStderr: string[] = [];
beforeEach(() => {
  processStderr = [];
  vi.spyOn(process.stderr, "write").mockImplementation((chunk: string | Uint8Array) => {
    processStderr.push(String(chunk));
    return true;
  });
});
afterEach(() => vi.restoreAllMocks());

async function run(argv: string[], options: { env?: Record<string, string>; cwd?: string } = {}): Promise<Run> {
  let stdout = "";
  let stderr = "";
  const code = await runCli(argv, {
    io: { stdout: (text) => (stdout += text), stderr: (text) => (stderr += text) },
    env: options.env ?? {},
    cwd: options.cwd ?? mkdtempSync(join(root, "cwd-")),
  });
  return { code, stdout, stderr, logs: processStderr.join("") };
}

const envelope = (stdout: string) => JSON.parse(stdout) as { success: boolean; command: string; error?: string; data?: Record<string, unknown> };

describe("usage errors", () => {
  it("exit 2 with one line on stderr and nothing on stdout", async () => {
    const result = await run(["push"]);
    expect(result.code).toBe(2);
    expect(result.stdout).toBe("");
    expect(result.stderr.trimEnd().split("\n")).toHaveLength(1);
    expect(result.stderr).toMatch(/^s3dock: .*missing required argument/);
  });

  it("with --json, one failure envelope on stdout", async () => {
    const result = await run(["push", "--json"]);
    expect(result.code).toBe(2);
    const doc = envelope(result.stdout);
    expect(doc).toMatchObject({ success: false, command: "push" });
    expect(doc.error).toMatch(/missing required argument/);
    expect(result.stdout.trim().split("\n}").length).toBe(2); // exactly one document
  });

  it.each([
    [["bogus"], "s3dock"],
    [["list", "images"], "list images"],
    [["tag", "shop:20250721-2118-f7a5a27"], "tag"],
    [["push", "a", "b"], "push"],
    [["version", "--nope"], "version"],
    [["config", "show", "--log-level", "7"], "config show"],
  ])("%j → exit 2, envelope command %s", async (argv, command) => {
    const result = await run([...argv, "--json"]);
    expect(result.code).toBe(2);
    expect(envelope(result.stdout)).toMatchObject({ success: false, command });
    expect(result.stderr.trimEnd().split("\n")).toHaveLength(1);
  });

  it("a command group without its subcommand is a usage error", async () => {
    expect((await run(["list"])).code).toBe(2);
    expect((await run([])).code).toBe(2);
  });

  it("--help exits 0", async () => {
    const result = await run(["push", "--help"]);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/Usage: s3dock push/);
  });
});

describe("version", () => {
  it("prints the bare version", async () => {
    expect(await run(["version"])).toMatchObject({ code: 0, stdout: `${TOOL_VERSION.version}\n` });
    expect(await run(["--version"])).toMatchObject({ code: 0, stdout: `${TOOL_VERSION.version}\n` });
  });

  it("--full prints version, commit and build date", async () => {
    const result = await run(["version", "--full"]);
    expect(result.code).toBe(0);
    expect(result.stdout).toBe(`s3dock version ${TOOL_VERSION.version}\ncommit: ${TOOL_VERSION.commit}\nbuilt: ${TOOL_VERSION.date}\n`);
  });

  it("--json gives version, commit and date", async () => {
    expect(envelope((await run(["version", "--json"])).stdout)).toEqual({
      success: true,
      command: "version",
      data: { version: TOOL_VERSION.version, commit: TOOL_VERSION.commit, date: TOOL_VERSION.date },
    });
  });
});

describe("config", () => {
  const ENV_SECRET = "env-secret-Zq8w1xX9";
  const PROFILE_SECRET = "profile-secret-Kd72mPq0";

  function cwdWithConfig(): string {
    const cwd = mkdtempSync(join(root, "cfg-"));
    writeFileSync(
      join(cwd, "s3dock.json5"),
      `{ profiles: { default: { bucket: "file-bucket", access_key: "AKIAPROFILE", secret_key: "${PROFILE_SECRET}" }, other: { bucket: "other-bucket" } } }`,
    );
    return cwd;
  }

  it("show never prints a secret, even at --log-level 3", async () => {
    const cwd = cwdWithConfig();
    for (const argv of [["config", "show", "--log-level", "3"], ["config", "show", "-l", "3", "--json"]]) {
      const fromProfile = await run(argv, { cwd });
      const fromEnv = await run(argv, { cwd, env: { AWS_ACCESS_KEY_ID: "AKIAENV", AWS_SECRET_ACCESS_KEY: ENV_SECRET } });
      for (const result of [fromProfile, fromEnv]) {
        expect(result.code).toBe(0);
        const everything = result.stdout + result.stderr + result.logs;
        expect(everything).not.toContain(ENV_SECRET);
        expect(everything).not.toContain(PROFILE_SECRET);
      }
      expect(fromProfile.stdout).toContain("AKIAPROFILE");
      expect(fromEnv.stdout).toContain("AKIAENV");
    }
  });

  it("show reflects flags and environment", async () => {
    const cwd = cwdWithConfig();
    const result = await run(["config", "show", "--json", "-b", "flag-bucket"], { cwd, env: { AWS_REGION: "eu-north-1" } });
    expect(envelope(result.stdout).data).toMatchObject({ profile: "default", bucket: "flag-bucket", region: "eu-north-1", access_key: "AKIAPROFILE" });
    const text = await run(["config", "show", "--profile", "other"], { cwd });
    expect(text.stdout).toMatch(/^Profile: +other$/m);
    expect(text.stdout).toMatch(/^Bucket: +other-bucket$/m);
  });

  it("show warns about unknown keys in the file, and still works", async () => {
    const result = await run(["config", "show", "--config", join(CONFIGS, "unknown-keys.json5")]);
    expect(result.code).toBe(0);
    expect(result.logs).toMatch(/unknown key telemetry \(ignored\)/);
    expect(result.stdout).toMatch(/Bucket: +known-bucket/);
  });

  it("list prints the profiles, starring the default", async () => {
    const result = await run(["config", "list", "--config", join(CONFIGS, "multi-env.json5")]);
    expect(result.code).toBe(0);
    expect(result.stdout).toBe("Available profiles:\n  dev\n  prod\n* staging\n");
    const json = await run(["config", "list", "--json", "--config", join(CONFIGS, "multi-env.json5")]);
    expect(envelope(json.stdout).data).toEqual({ profiles: ["dev", "prod", "staging"], default_profile: "staging" });
  });

  it("an unknown profile is a config error listing the known ones", async () => {
    const result = await run(["config", "show", "-p", "nope", "--config", join(CONFIGS, "multi-env.json5"), "--json"]);
    expect(result.code).toBe(2);
    const doc = envelope(result.stdout);
    expect(doc).toMatchObject({ success: false, command: "config show" });
    expect(doc.error).toMatch(/unknown profile "nope".*dev, prod, staging/);
  });

  it("an invalid config file is a config error naming the file", async () => {
    const result = await run(["config", "show", "--config", join(CONFIGS, "invalid-syntax.json5")]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("invalid-syntax.json5");
    expect(result.stderr).toMatch(/line 4/);
  });

  it("init writes a starter file that loads, and refuses to overwrite", async () => {
    const cwd = mkdtempSync(join(root, "init-"));
    const first = await run(["config", "init"], { cwd });
    expect(first.code).toBe(0);
    const path = join(cwd, "s3dock.json5");
    expect(readFileSync(path, "utf8")).toBe(STARTER_CONFIG);
    expect(parseConfigText(STARTER_CONFIG, path).unknownKeys).toEqual([]);
    writeFileSync(path, "// mine\n{}\n");
    const second = await run(["config", "init", "--json"], { cwd });
    expect(second.code).toBe(2);
    expect(envelope(second.stdout).error).toMatch(/already exists/);
    expect(readFileSync(path, "utf8")).toBe("// mine\n{}\n");
    const named = await run(["config", "init", "other.json5"], { cwd });
    expect(named.code).toBe(0);
    expect(readFileSync(join(cwd, "other.json5"), "utf8")).toBe(STARTER_CONFIG);
  });
});

describe("global flags anywhere in argv", () => {
  it("push x --json: one envelope, usage error from the service", async () => {
    const result = await run(["push", "x", "--json"]);
    expect(result.code).toBe(2);
    expect(envelope(result.stdout)).toMatchObject({ success: false, command: "push" });
    expect(envelope(result.stdout).error).toMatch(/invalid image reference/);
  });

  it("list images app --json -b bucket: the flags after the subcommand apply", async () => {
    const result = await run(["list", "images", "Bad_App", "--json", "-b", "some-bucket"]);
    expect(result.code).toBe(2);
    expect(envelope(result.stdout)).toMatchObject({ success: false, command: "list images" });
    expect(envelope(result.stdout).error).toMatch(/invalid app name "Bad_App"/);
  });

  it("-b, --profile and --config after the subcommand are honoured", async () => {
    const cwd = mkdtempSync(join(root, "flags-"));
    copyFileSync(join(CONFIGS, "multi-env.json5"), join(cwd, "elsewhere.json5"));
    const result = await run(["config", "show", "--json", "-b", "after-bucket", "--profile", "prod", "--config", join(cwd, "elsewhere.json5")], { cwd });
    expect(result.code).toBe(0);
    expect(envelope(result.stdout).data).toMatchObject({ profile: "prod", bucket: "after-bucket", region: "eu-central-1" });
  });
});
