import { describe, expect, it } from "vitest";
import { UsageError } from "../../src/errors.js";
import {
  compareVersionsDescending,
  formatImageRef,
  isGitTime,
  isImageRef,
  looksLikeVersion,
  parseAppName,
  parseEnvName,
  parseImageRef,
  parseVersion,
  versionSpellings,
} from "../../src/domain/names.js";

describe("parseAppName", () => {
  it.each(["myapp", "my-app", "my--app", "my---app", "my.app", "my_app", "my__app", "a", "0", "app2", "a.b-c_d__e", "x".repeat(128)])(
    "accepts %s",
    (name) => expect(parseAppName(name)).toBe(name),
  );

  it.each([
    "",
    "MyApp",
    "my app",
    "my/app",
    "../app",
    "my..app",
    "my.-app",
    "my___app",
    "my._app",
    "-app",
    "app-",
    ".app",
    "app.",
    "_app",
    "app_",
    "app:tag",
    "app\n",
    "ápp",
    "x".repeat(129),
  ])("rejects %j with a UsageError", (name) => {
    expect(() => parseAppName(name)).toThrow(UsageError);
  });

  it("names the bad input in the message", () => {
    expect(() => parseAppName("Bad App")).toThrow(/"Bad App"/);
  });
});

describe("parseEnvName", () => {
  it.each(["production", "staging", "Prod", "qa-1", "qa_1", "1st", "x".repeat(63)])("accepts %s", (env) =>
    expect(parseEnvName(env)).toBe(env),
  );
  it.each(["", "-prod", "_prod", "pro d", "prod/x", "..", ".", "prod.eu", "x".repeat(64), "prod\n"])("rejects %j", (env) =>
    expect(() => parseEnvName(env)).toThrow(UsageError),
  );
});

describe("isGitTime", () => {
  it.each(["20250721-2118", "20000101-0000", "20991231-2359"])("accepts %s", (value) => expect(isGitTime(value)).toBe(true));
  it.each(["20251321-2118", "20250021-2118", "20250700-2118", "20250732-2118", "20250721-2418", "20250721-2160", "2025072-2118", "20250721_2118"])(
    "rejects %s",
    (value) => expect(isGitTime(value)).toBe(false),
  );
});

describe("parseImageRef", () => {
  it("parses app:YYYYMMDD-HHMM-hash7", () => {
    expect(parseImageRef("myapp:20250721-2118-f7a5a27")).toEqual({ app: "myapp", gitTime: "20250721-2118", gitHash: "f7a5a27" });
  });

  it.each(["my-app", "my.app", "my--app", "my_app.v2"])("accepts app %s with separators", (app) => {
    const ref = parseImageRef(`${app}:20250721-2118-f7a5a27`);
    expect(ref.app).toBe(app);
    expect(formatImageRef(ref)).toBe(`${app}:20250721-2118-f7a5a27`);
  });

  it.each([
    "myapp",
    "myapp:",
    ":20250721-2118-f7a5a27",
    "myapp20250721-2118-f7a5a27",
    "myapp:20251321-2118-f7a5a27",
    "myapp:20250721-2518-f7a5a27",
    "myapp:20250721-2161-f7a5a27",
    "myapp:20250721-2118-f7a5a2",
    "myapp:20250721-2118-f7a5a27a",
    "myapp:20250721-2118-F7A5A27",
    "myapp:20250721-2118-g7a5a27",
    "myapp:latest",
    "MyApp:20250721-2118-f7a5a27",
    "registry/myapp:20250721-2118-f7a5a27",
    "myapp:20250721-2118-f7a5a27 ",
  ])("rejects %j with a UsageError", (input) => {
    expect(() => parseImageRef(input)).toThrow(UsageError);
    expect(isImageRef(input)).toBe(false);
  });
});

describe("parseVersion", () => {
  it.each([
    ["v1.2.0", "v1.2.0"],
    ["1.2.0", "v1.2.0"],
    ["v0.0.1", "v0.0.1"],
    ["v2.0.0-rc.1", "v2.0.0-rc.1"],
    ["2.0.0-rc.1", "v2.0.0-rc.1"],
    ["v10.20.30", "v10.20.30"],
  ])("%s → %s", (input, canonical) => {
    expect(parseVersion(input)).toBe(canonical);
    expect(looksLikeVersion(input)).toBe(true);
  });

  it.each(["1.2", "v1.2", "latest", "v1", "1", "", "vv1.2.3", "V1.2.3", "v01.2.3", "v1.2.3.4", " v1.2.3", "v1.2.3 ", "=1.2.3", "v1.2.3-", "v1.2.3/x"])(
    "rejects %j",
    (input) => {
      expect(() => parseVersion(input)).toThrow(UsageError);
      expect(looksLikeVersion(input)).toBe(false);
    },
  );

  it("refuses build metadata in one line rather than merging v1.0.0+build.5 into v1.0.0", () => {
    expect(looksLikeVersion("v1.0.0+build.5")).toBe(true);
    expect(() => parseVersion("v1.0.0+build.5")).toThrow(/build metadata \(\+build\.5\) is not supported.*v1\.0\.0-build\.5/);
    expect(() => parseVersion("2.0.0-rc.1+exp")).toThrow(UsageError);
  });
});

describe("versionSpellings", () => {
  it("lists the canonical then the bare form", () => {
    expect(versionSpellings("v1.2.0")).toEqual(["v1.2.0", "1.2.0"]);
    expect(versionSpellings(parseVersion("2.0.0-rc.1"))).toEqual(["v2.0.0-rc.1", "2.0.0-rc.1"]);
  });
});

describe("compareVersionsDescending", () => {
  it("orders by semver, newest first (v1.10.0 before v1.9.0)", () => {
    const sorted = ["v1.9.0", "v1.10.0", "v1.2.0", "v2.0.0", "v0.9.9"].sort(compareVersionsDescending);
    expect(sorted).toEqual(["v2.0.0", "v1.10.0", "v1.9.0", "v1.2.0", "v0.9.9"]);
  });

  it("puts a prerelease below its release and orders prereleases", () => {
    const sorted = ["v2.0.0-rc.1", "v2.0.0", "v2.0.0-rc.10", "v2.0.0-beta", "v1.9.9"].sort(compareVersionsDescending);
    expect(sorted).toEqual(["v2.0.0", "v2.0.0-rc.10", "v2.0.0-rc.1", "v2.0.0-beta", "v1.9.9"]);
  });

  it("mixes bare and v spellings by value", () => {
    expect(["1.0.0", "v1.1.0", "0.5.0"].sort(compareVersionsDescending)).toEqual(["v1.1.0", "1.0.0", "0.5.0"]);
  });

  it("puts non-semver names last", () => {
    const sorted = ["latest", "v1.0.0", "stable", "v0.1.0"].sort(compareVersionsDescending);
    expect(sorted.slice(0, 2)).toEqual(["v1.0.0", "v0.1.0"]);
    expect(new Set(sorted.slice(2))).toEqual(new Set(["latest", "stable"]));
  });

  it("returns 0 only for the same string", () => {
    expect(compareVersionsDescending("v1.0.0", "v1.0.0")).toBe(0);
    expect(compareVersionsDescending("v1.0.0", "1.0.0")).not.toBe(0);
  });
});
