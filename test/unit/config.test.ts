import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ConfigError } from "../../src/errors.js";
import { DEFAULT_BUCKET, DEFAULT_GZIP_LEVEL, DEFAULT_REGION, parseDuration, resolveConfig, type ResolveInput } from "../../src/domain/config.js";
import { deploySettingsFor } from "../../src/domain/deploy-config.js";
import { defaultSearchPaths, loadConfigFile, MAX_CONFIG_BYTES, parseConfigText, type LoadedConfigFile } from "../../src/config/loader.js";

const CONFIGS = resolve(import.meta.dirname, "../../test-configs");
const config = (name: string) => join(CONFIGS, name);
const load = (name: string): LoadedConfigFile => loadConfigFile(config(name), [])!;

const tmp = mkdtempSync(join(tmpdir(), "s3dock-config-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function resolveWith(input: Partial<ResolveInput> & { text?: string }) {
  const file = input.text === undefined ? input.file : parseConfigText(input.text, "/x/s3dock.json5");
  return resolveConfig({ file, flags: input.flags ?? {}, env: input.env ?? {}, cpuCount: input.cpuCount ?? 4 });
}

function errorOf(fn: () => unknown): Error {
  try {
    fn();
  } catch (error) {
    return error as Error;
  }
  throw new Error("did not throw");
}

describe("search order", () => {
  it("defaultSearchPaths: ./s3dock.json5, ~/.s3dock/config.json5, /etc/s3dock/config.json5", () => {
    expect(defaultSearchPaths("/work/app", "/home/u")).toEqual([
      "/work/app/s3dock.json5",
      "/home/u/.s3dock/config.json5",
      "/etc/s3dock/config.json5",
    ]);
  });

  it("the first existing file wins", () => {
    const cwd = join(tmp, "cwd");
    const home = join(tmp, "home");
    const etc = join(tmp, "etc");
    mkdirSync(join(home, ".s3dock"), { recursive: true });
    mkdirSync(cwd, { recursive: true });
    mkdirSync(etc, { recursive: true });
    const etcFile = join(etc, "config.json5");
    writeFileSync(etcFile, '{ profiles: { default: { bucket: "from-etc" } } }');
    const paths = [...defaultSearchPaths(cwd, home).slice(0, 2), etcFile];
    expect(loadConfigFile(undefined, paths)?.config.profiles?.default?.bucket).toBe("from-etc");
    writeFileSync(join(home, ".s3dock", "config.json5"), '{ profiles: { default: { bucket: "from-home" } } }');
    expect(loadConfigFile(undefined, paths)?.config.profiles?.default?.bucket).toBe("from-home");
    writeFileSync(join(cwd, "s3dock.json5"), '{ profiles: { default: { bucket: "from-cwd" } } }');
    const found = loadConfigFile(undefined, paths);
    expect(found?.path).toBe(join(cwd, "s3dock.json5"));
    expect(found?.config.profiles?.default?.bucket).toBe("from-cwd");
  });

  it("no file anywhere → undefined (built-in defaults)", () => {
    expect(loadConfigFile(undefined, [join(tmp, "none-1.json5"), join(tmp, "nodir", "none-2.json5")])).toBeUndefined();
  });

  it("an explicit --config that is missing is a ConfigError, even when a search path exists", () => {
    const error = errorOf(() => loadConfigFile(join(tmp, "missing.json5"), [config("dev.json5")]));
    expect(error).toBeInstanceOf(ConfigError);
    expect(error.message).toContain("missing.json5");
  });

  it("an explicit --config is used instead of the search paths", () => {
    expect(loadConfigFile(config("multi-env.json5"), [config("dev.json5")])?.config.default_profile).toBe("staging");
  });

  it("a directory where a file is expected is not silently skipped", () => {
    expect(() => loadConfigFile(tmp, [])).toThrow(ConfigError);
  });

  it.each([
    ["a device", () => "/dev/null", /is a device: give a regular file/],
    ["a directory", () => tmp, /is a directory: give a regular file/],
    [
      "a FIFO (at once, without waiting for a writer)",
      () => {
        const fifo = join(tmp, "config.fifo");
        execFileSync("mkfifo", [fifo]);
        return fifo;
      },
      /is a FIFO: give a regular file/,
    ],
    [
      "a file over 1 MiB",
      () => {
        const big = join(tmp, "big.json5");
        writeFileSync(big, `{}${" ".repeat(MAX_CONFIG_BYTES)}`);
        return big;
      },
      /is larger than 1024 KiB/,
    ],
  ])("refuses %s, named or found", (_, make, message) => {
    const path = make();
    expect(errorOf(() => loadConfigFile(path, [])).message).toMatch(message);
    expect(errorOf(() => loadConfigFile(undefined, [path])).message).toMatch(message);
  });

  it("reads a file of exactly 1 MiB", () => {
    const file = join(tmp, "exact.json5");
    writeFileSync(file, `{}${" ".repeat(MAX_CONFIG_BYTES - 2)}`);
    expect(loadConfigFile(file, [])?.config).toEqual({});
  });
});

describe("parse errors", () => {
  it("invalid JSON5 names the file and the line", () => {
    const error = errorOf(() => load("invalid-syntax.json5"));
    expect(error).toBeInstanceOf(ConfigError);
    expect(error.message).toContain(config("invalid-syntax.json5"));
    expect(error.message).toMatch(/line 4/);
  });

  it("a schema violation names the path of the field", () => {
    const error = errorOf(() => load("schema-violation.json5"));
    expect(error).toBeInstanceOf(ConfigError);
    expect(error.message).toContain("profiles.dev.endpoint");
  });

  it.each([
    ['{ profiles: { dev: { bucket: 7 } } }', "profiles.dev.bucket"],
    ['{ docker: { compression: "zstd" } }', "docker.compression"],
    ['{ docker: { compression: "gzip:10" } }', "docker.compression"],
    ["{ defaults: { retry_count: -1 } }", "defaults.retry_count"],
    ['{ defaults: { log_level: "verbose" } }', "defaults.log_level"],
    ["{ defaults: { log_level: 4 } }", "defaults.log_level"],
    ["{ transfer: { part_size_mb: 4 } }", "transfer.part_size_mb"],
    ["{ deploy: { apps: { web: { port: 70000 } } } }", "deploy.apps.web.port"],
    ['{ deploy: { apps: { web: { envs: { prod: { restart: "sometimes" } } } } } }', "deploy.apps.web.envs.prod.restart"],
  ])("%s → error at %s", (text, path) => {
    const error = errorOf(() => parseConfigText(text, "/x/c.json5"));
    expect(error).toBeInstanceOf(ConfigError);
    expect(error.message).toContain(`${path}:`);
  });

  it.each(["[]", "42", "null", '"x"'])("top level %s is refused", (text) => {
    expect(() => parseConfigText(text, "/x/c.json5")).toThrow(/top level must be an object/);
  });
});

describe("unknown keys", () => {
  it("are returned as dotted paths and ignored", () => {
    const file = load("unknown-keys.json5");
    expect([...file.unknownKeys].sort()).toEqual(["docker.registry_mirror", "profiles.default.colour", "telemetry"]);
    expect(file.config.profiles?.default).toEqual({ bucket: "known-bucket" });
    expect(file.config.docker).toEqual({ timeout: 10 });
    expect(resolveConfig({ file, flags: {}, env: {}, cpuCount: 1 }).dockerTimeoutMs).toBe(10_000);
  });

  it("and a real violation next to them is still reported", () => {
    expect(() => parseConfigText('{ foo: 1, profiles: { p: { region: "" } } }', "/x/c.json5")).toThrow(/profiles\.p\.region/);
  });
});

describe("the test configs and the example", () => {
  it("dev.json5 (the Go tool's shape) resolves, with log_level \"debug\" → 3", () => {
    const resolved = resolveConfig({ file: load("dev.json5"), flags: {}, env: {}, cpuCount: 2 });
    expect(resolved).toMatchObject({
      profile: "dev",
      bucket: "dev-containers",
      endpoint: "http://localhost:9000",
      credentials: { accessKeyId: "minioadmin", secretAccessKey: "minioadmin-secret" },
      logLevel: 3,
      retryCount: 3,
      dockerTimeoutMs: 30_000,
    });
    expect(resolved.transfer.gzipLevel).toBe(DEFAULT_GZIP_LEVEL);
    expect(resolved.transfer.compressionWorkers).toBe(2);
  });

  it("multi-env.json5: default profile, each profile, transfer settings", () => {
    const file = load("multi-env.json5");
    const base = resolveConfig({ file, flags: {}, env: {}, cpuCount: 8 });
    expect(base).toMatchObject({ profile: "staging", bucket: "staging-containers", region: "eu-west-1", endpoint: undefined, credentials: undefined, logLevel: 1 });
    expect(base.profiles).toEqual(["dev", "prod", "staging"]);
    expect(base.transfer).toEqual({ partSizeBytes: 8 * 1024 * 1024, concurrency: 2, chunkSizeBytes: 2 * 1024 * 1024, compressionWorkers: 3, gzipLevel: 9, maxImageBytesWithoutSize: 8192 * 1024 * 1024 });
    expect(resolveConfig({ file, flags: { profile: "prod" }, env: {}, cpuCount: 1 }).bucket).toBe("prod-containers");
    expect(resolveConfig({ file, flags: {}, env: { S3DOCK_PROFILE: "dev" }, cpuCount: 1 }).credentials?.accessKeyId).toBe("dev-key");
  });

  it("deploy.json5: the deploy section, merged per environment", () => {
    const resolved = resolveConfig({ file: load("deploy.json5"), flags: {}, env: {}, cpuCount: 1 });
    expect(resolved.bucket).toBe("deploy-containers");
    const production = deploySettingsFor(resolved.deploy, "web", "production");
    expect(production).toMatchObject({ port: 8080, memory: "1g", network: "web", health: { http_path: "/health", timeout_seconds: 120, interval_seconds: 1 } });
    expect(production.env).toEqual({ NODE_ENV: "production", LOG_FORMAT: "json", LOG_LEVEL: "warn" });
    expect(deploySettingsFor(resolved.deploy, "web", "staging").memory).toBe("512m");
  });

  it("s3dock.json5.example parses and validates with no unknown keys", () => {
    const file = loadConfigFile(resolve(import.meta.dirname, "../../s3dock.json5.example"), [])!;
    expect(file.unknownKeys).toEqual([]);
    const resolved = resolveConfig({ file, flags: {}, env: {}, cpuCount: 2 });
    expect(resolved).toMatchObject({ profile: "dev", bucket: "dev-containers", dockerTimeoutMs: 30_000, logLevel: 2 });
    expect(resolved.transfer.gzipLevel).toBe(6);
    expect(resolved.transfer.maxImageBytesWithoutSize).toBe(8192 * 1024 * 1024);
    expect(resolved.profiles).toEqual(["dev", "prod"]);
    expect(resolved.deploy.apps?.myapp?.port).toBe(8080);
  });
});

describe("resolveConfig", () => {
  it("no file → default profile, bucket s3dock-containers, region us-east-1, credential chain", () => {
    const resolved = resolveWith({});
    expect(resolved).toMatchObject({ profile: "default", bucket: DEFAULT_BUCKET, region: DEFAULT_REGION, endpoint: undefined, credentials: undefined, configFile: undefined, logLevel: 2, retryCount: 3 });
    expect(DEFAULT_BUCKET).toBe("s3dock-containers");
    expect(DEFAULT_REGION).toBe("us-east-1");
  });

  const text = `{ profiles: { default: { bucket: "file-bucket", region: "eu-west-1", endpoint: "http://file:9000", access_key: "file-ak", secret_key: "file-sk" }, other: { bucket: "other-bucket" } } }`;

  it("profile values beat the defaults", () => {
    expect(resolveWith({ text })).toMatchObject({ bucket: "file-bucket", region: "eu-west-1", endpoint: "http://file:9000", credentials: { accessKeyId: "file-ak", secretAccessKey: "file-sk" } });
  });

  it("environment beats the profile", () => {
    const env = { S3DOCK_BUCKET: "env-bucket", AWS_REGION: "ap-south-1", AWS_ENDPOINT_URL: "http://env:9000", AWS_ACCESS_KEY_ID: "env-ak", AWS_SECRET_ACCESS_KEY: "env-sk" };
    expect(resolveWith({ text, env })).toMatchObject({ bucket: "env-bucket", region: "ap-south-1", endpoint: "http://env:9000", credentials: { accessKeyId: "env-ak", secretAccessKey: "env-sk" } });
  });

  it("flags beat the environment", () => {
    const resolved = resolveWith({ text, env: { S3DOCK_BUCKET: "env-bucket", S3DOCK_PROFILE: "default" }, flags: { bucket: "flag-bucket", profile: "other" } });
    expect(resolved).toMatchObject({ profile: "other", bucket: "flag-bucket" });
  });

  it("S3DOCK_PROFILE picks the profile when no flag does", () => {
    expect(resolveWith({ text, env: { S3DOCK_PROFILE: "other" } }).bucket).toBe("other-bucket");
  });

  it("empty environment values count as unset", () => {
    expect(resolveWith({ text, env: { S3DOCK_BUCKET: "", AWS_REGION: "", S3DOCK_PROFILE: "" } })).toMatchObject({ bucket: "file-bucket", region: "eu-west-1", profile: "default" });
  });

  it("--log-level beats the file's log_level", () => {
    expect(resolveWith({ text: '{ defaults: { log_level: "debug" } }', flags: { logLevel: 1 } }).logLevel).toBe(1);
    expect(resolveWith({ text: '{ defaults: { log_level: "error" } }' }).logLevel).toBe(1);
    expect(resolveWith({ text: '{ defaults: { log_level: "warn" } }' }).logLevel).toBe(2);
    expect(resolveWith({ text: '{ defaults: { log_level: 3 } }' }).logLevel).toBe(3);
  });

  it("an unknown profile is a ConfigError listing the known ones", () => {
    const error = errorOf(() => resolveWith({ text, flags: { profile: "staging" } }));
    expect(error).toBeInstanceOf(ConfigError);
    expect(error.message).toContain('"staging"');
    expect(error.message).toContain("default, other");
  });

  it("an unknown profile with no file at all is a ConfigError", () => {
    expect(() => resolveWith({ flags: { profile: "prod" } })).toThrow(/unknown profile "prod".*no config file/);
  });

  it.each(["constructor", "toString", "__proto__"])("a profile named like an Object.prototype member (%s) is unknown unless defined", (name) => {
    expect(() => resolveWith({ text, flags: { profile: name } })).toThrow(/unknown profile/);
    expect(() => resolveWith({ text: `{ default_profile: "${name}", profiles: { a: {} } }` })).toThrow(/default_profile/);
    expect(resolveWith({ text: `{ profiles: { ${name === "__proto__" ? "x" : name}: { bucket: "proto-bucket" } } }`, flags: { profile: name === "__proto__" ? "x" : name } }).bucket).toBe("proto-bucket");
  });

  it("a default_profile that names no profile is a ConfigError", () => {
    expect(() => resolveWith({ text: '{ default_profile: "x", profiles: { a: {} } }' })).toThrow(/default_profile "x"/);
  });

  it("an access key without a secret (or the reverse) is a ConfigError", () => {
    expect(() => resolveWith({ text: '{ profiles: { default: { access_key: "ak" } } }' })).toThrow(/no secret key/);
    expect(() => resolveWith({ env: { AWS_SECRET_ACCESS_KEY: "sk" } })).toThrow(/no access key/);
    expect(() => resolveWith({ text: '{ profiles: { default: { access_key: "ak" } } }', env: { AWS_SECRET_ACCESS_KEY: "sk" } })).not.toThrow();
  });

  it.each([
    ["gzip", DEFAULT_GZIP_LEVEL],
    ["gzip:0", 0],
    ["gzip:6", 6],
    ["gzip:9", 9],
    ["none", 0],
  ])("docker.compression %s → level %d", (compression, level) => {
    expect(resolveWith({ text: `{ docker: { compression: "${compression}" } }` }).transfer.gzipLevel).toBe(level);
  });

  it("compression workers default to the CPU count, at least 1", () => {
    expect(resolveWith({ cpuCount: 6 }).transfer.compressionWorkers).toBe(6);
    expect(resolveWith({ cpuCount: 0 }).transfer.compressionWorkers).toBe(1);
  });

  it("an invalid docker.timeout is a ConfigError", () => {
    expect(() => resolveWith({ text: '{ docker: { timeout: "soon" } }' })).toThrow(ConfigError);
  });

  it("transfer.idle_timeout: 30 s by default, a duration or seconds, never shorter than 100 ms", () => {
    expect(resolveWith({}).idleTimeoutMs).toBe(30_000);
    expect(resolveWith({ text: '{ transfer: { idle_timeout: "2m" } }' }).idleTimeoutMs).toBe(120_000);
    expect(resolveWith({ text: "{ transfer: { idle_timeout: 5 } }" }).idleTimeoutMs).toBe(5_000);
    expect(() => resolveWith({ text: '{ transfer: { idle_timeout: "10ms" } }' })).toThrow(/transfer\.idle_timeout: .* too short/);
    expect(() => resolveWith({ text: '{ transfer: { idle_timeout: "later" } }' })).toThrow(ConfigError);
  });
});

describe("parseDuration", () => {
  it.each([
    ["1500ms", 1500],
    ["30s", 30_000],
    ["5m", 300_000],
    ["2h", 7_200_000],
    ["1d", 86_400_000],
    ["10", 10_000],
    ["1.5s", 1500],
    [" 30s ", 30_000],
  ])("%j → %d ms", (value, ms) => expect(parseDuration(value, "t")).toBe(ms));

  it("a number is seconds", () => expect(parseDuration(45, "t")).toBe(45_000));

  it.each(["", "s", "30x", "-5s", "5 m", "1e3"])("%j → ConfigError naming the setting", (value) => {
    expect(() => parseDuration(value, "docker.timeout")).toThrow(/docker\.timeout: invalid duration/);
  });
});
