import fc from "fast-check";
import JSON5 from "json5";
import { describe, expect, it } from "vitest";
import { ConfigError, IntegrityError, UsageError } from "../../src/errors.js";
import { parseConfigText } from "../../src/config/loader.js";
import { configFileSchema, resolveConfig } from "../../src/domain/config.js";
import { auditEventSchema, imageMetadataSchema, parseDocument, pointerSchema } from "../../src/domain/documents.js";
import {
  appFromPrefix,
  archivedImageKey,
  auditKey,
  imageKey,
  imagesPrefix,
  metadataKeyFor,
  monthFromPrefix,
  nameInPrefix,
  parseImageKey,
  pointerKey,
  pointersPrefix,
  tagKey,
  tagsPrefix,
} from "../../src/domain/keys.js";
import { compareVersionsDescending, formatImageRef, parseAppName, parseEnvName, parseImageRef, parseVersion } from "../../src/domain/names.js";
import { formatGoTime, isRfc3339 } from "../../src/domain/time.js";

const RUNS = { numRuns: 300 };

/** Either a value, or a UsageError: never any other exception. */
function acceptOrUsage<T>(parse: () => T): T | undefined {
  try {
    return parse();
  } catch (error) {
    expect(error).toBeInstanceOf(UsageError);
    return undefined;
  }
}

/** Strings over characters that matter to names and keys, so accepted values are common. */
const nameish = fc.string({ unit: fc.constantFrom(..."abz09.-_/\\:A \n."), maxLength: 20 });
const anyString = fc.oneof(fc.string({ maxLength: 40 }), fc.string({ unit: "grapheme", maxLength: 20 }), nameish);

const appName = fc.stringMatching(/^[a-z0-9]{1,6}(?:(?:[._]|__|-{1,3})[a-z0-9]{1,6}){0,3}$/);
const digits = (n: number, max: number, min = 0) => fc.integer({ min, max }).map((v) => String(v).padStart(n, "0"));
const gitTime = fc
  .tuple(digits(4, 2099, 2000), digits(2, 12, 1), digits(2, 28, 1), digits(2, 23), digits(2, 59))
  .map(([y, mo, d, h, mi]) => `${y}${mo}${d}-${h}${mi}`);
const gitHash = fc.stringMatching(/^[0-9a-f]{7}$/);
const month = fc.tuple(digits(4, 2099, 2000), digits(2, 12, 1)).map(([y, m]) => `${y}${m}`);
const imageRefString = fc.tuple(appName, gitTime, gitHash).map(([app, time, hash]) => `${app}:${time}-${hash}`);

const identifier = fc.oneof(fc.stringMatching(/^[a-z][a-z0-9-]{0,5}$/), fc.integer({ min: 0, max: 30 }).map(String));
const semverString = fc
  .tuple(
    fc.boolean(),
    fc.nat(20),
    fc.nat(20),
    fc.nat(20),
    fc.option(fc.array(identifier, { minLength: 1, maxLength: 3 }), { nil: undefined }),
    fc.option(fc.stringMatching(/^[a-z0-9]{1,4}$/), { nil: undefined }),
  )
  .map(([v, major, minor, patch, pre, build]) => `${v ? "v" : ""}${major}.${minor}.${patch}${pre ? `-${pre.join(".")}` : ""}${build ? `+${build}` : ""}`);

function assertSafeKey(key: string, prefix: string): void {
  expect(key.startsWith("/")).toBe(false);
  expect(key.startsWith(prefix)).toBe(true);
  for (const segment of key.split("/")) {
    expect(segment).not.toBe("");
    expect(segment).not.toBe(".");
    expect(segment).not.toBe("..");
  }
}

describe("parsers never throw anything but UsageError", () => {
  it.each([
    ["parseAppName", parseAppName],
    ["parseEnvName", parseEnvName],
    ["parseVersion", parseVersion],
    ["parseImageRef", (s: string) => formatImageRef(parseImageRef(s))],
  ] as const)("%s", (_name, parse) => {
    fc.assert(
      fc.property(fc.oneof(anyString, imageRefString, semverString), (input) => {
        acceptOrUsage(() => parse(input));
      }),
      RUNS,
    );
  });

  it("an accepted app name is returned unchanged and is a safe key segment", () => {
    fc.assert(
      fc.property(fc.oneof(nameish, appName), (input) => {
        const app = acceptOrUsage(() => parseAppName(input));
        if (app === undefined) return;
        expect(app).toBe(input);
        for (const [key, prefix] of [
          [imagesPrefix(app), `images/${app}/`],
          [tagsPrefix(app), `tags/${app}/`],
          [pointersPrefix(app), `pointers/${app}/`],
        ] as const) {
          expect(key).toBe(prefix);
          expect(appFromPrefix(key)).toBe(app);
        }
      }),
      RUNS,
    );
  });
});

describe("keys built from accepted values are safe and parse back", () => {
  it("image keys round-trip through parseImageKey", () => {
    fc.assert(
      fc.property(fc.oneof(imageRefString, anyString), month, (input, folder) => {
        const ref = acceptOrUsage(() => parseImageRef(input));
        if (!ref) return;
        const key = imageKey(ref, folder);
        assertSafeKey(key, `images/${ref.app}/${folder}/`);
        expect(parseImageKey(key)).toEqual({ ...ref, month: folder, ref: formatImageRef(ref), kind: "image" });
        expect(parseImageKey(metadataKeyFor(key))?.kind).toBe("metadata");
        expect(monthFromPrefix(`${imagesPrefix(ref.app)}${folder}/`)).toBe(folder);
        assertSafeKey(archivedImageKey(key, "20250101-0000", "0badcafe"), `archive/${ref.app}/${folder}/`);
      }),
      RUNS,
    );
  });

  it("tag and pointer keys are safe and name their document", () => {
    fc.assert(
      fc.property(appName, fc.oneof(semverString, anyString), fc.oneof(nameish, anyString), (app, versionInput, envInput) => {
        const version = acceptOrUsage(() => parseVersion(versionInput));
        if (version !== undefined) {
          const key = tagKey(app, version);
          assertSafeKey(key, `tags/${app}/`);
          expect(nameInPrefix(tagsPrefix(app), key)).toBe(version);
        }
        const env = acceptOrUsage(() => parseEnvName(envInput));
        if (env !== undefined) {
          const key = pointerKey(app, env);
          assertSafeKey(key, `pointers/${app}/`);
          expect(nameInPrefix(pointersPrefix(app), key)).toBe(env);
        }
      }),
      RUNS,
    );
  });

  it("audit keys are safe", () => {
    fc.assert(
      fc.property(imageRefString, month, fc.stringMatching(/^[0-9a-f]{8}$/), (input, folder, unique) => {
        const ref = parseImageRef(input);
        assertSafeKey(auditKey(ref.app, folder, `${folder}01-0000`, "push", ref.gitHash, unique), `audit/${ref.app}/${folder}/`);
      }),
      RUNS,
    );
  });

  it("no string is accepted as an image key unless it has the image layout", () => {
    fc.assert(
      fc.property(fc.oneof(anyString, fc.tuple(nameish, nameish).map(([a, b]) => `images/${a}/${b}`)), (key) => {
        const parsed = parseImageKey(key);
        if (parsed) expect(imageKey(parsed, parsed.month) === key || metadataKeyFor(imageKey(parsed, parsed.month)) === key).toBe(true);
      }),
      RUNS,
    );
  });
});

describe("documents", () => {
  it("parseDocument returns or throws IntegrityError on any JSON value and any text", () => {
    fc.assert(
      fc.property(fc.oneof(fc.jsonValue().map((value) => JSON.stringify(value)), fc.string()), (text) => {
        for (const schema of [imageMetadataSchema, pointerSchema, auditEventSchema]) {
          try {
            parseDocument(schema as typeof pointerSchema, text, "s3://b/k");
          } catch (error) {
            expect(error).toBeInstanceOf(IntegrityError);
            expect((error as Error).message).toContain("s3://b/k");
          }
        }
      }),
      RUNS,
    );
  });

  it("formatGoTime is always RFC 3339 and exact to the millisecond", () => {
    fc.assert(
      fc.property(fc.date({ min: new Date("1970-01-01T00:00:00Z"), max: new Date("2999-12-31T00:00:00Z"), noInvalidDate: true }), (date) => {
        const text = formatGoTime(date);
        expect(isRfc3339(text)).toBe(true);
        expect(Date.parse(text)).toBe(date.getTime());
      }),
      RUNS,
    );
  });
});

describe("config", () => {
  const configKey = fc.constantFrom("default_profile", "profiles", "docker", "defaults", "transfer", "deploy", "naming", "unknown", "bucket", "timeout", "compression", "log_level", "retry_count", "apps", "dev", "port", "endpoint");
  const configValue = fc.letrec((tie) => ({
    value: fc.oneof({ depthSize: "small" }, fc.jsonValue({ maxDepth: 1 }), tie("object")),
    object: fc.dictionary(configKey, tie("value"), { maxKeys: 4 }),
  }));

  it("parseConfigText returns or throws ConfigError, and resolveConfig too", () => {
    fc.assert(
      fc.property(fc.oneof(configValue.object, fc.jsonValue()), (value) => {
        const text = JSON5.stringify(value);
        let loaded;
        try {
          loaded = parseConfigText(text, "/x/c.json5");
        } catch (error) {
          expect(error).toBeInstanceOf(ConfigError);
          return;
        }
        // What is left after dropping the unknown keys is exactly what the schema accepts.
        expect(configFileSchema.safeParse(loaded.config).success).toBe(true);
        try {
          resolveConfig({ file: loaded, flags: {}, env: {}, cpuCount: 2 });
        } catch (error) {
          expect(error).toBeInstanceOf(ConfigError);
        }
      }),
      RUNS,
    );
  });

  it("arbitrary text never crashes the parser with anything but ConfigError", () => {
    fc.assert(
      fc.property(fc.string(), (text) => {
        try {
          parseConfigText(text, "/x/c.json5");
        } catch (error) {
          expect(error).toBeInstanceOf(ConfigError);
        }
      }),
      RUNS,
    );
  });
});

describe("compareVersionsDescending", () => {
  const sign = (n: number) => Math.sign(n);
  const version = fc.oneof({ weight: 5, arbitrary: semverString }, { weight: 1, arbitrary: fc.string({ maxLength: 8 }) });

  it("is antisymmetric and reflexive", () => {
    fc.assert(
      fc.property(version, version, (a, b) => {
        expect(sign(compareVersionsDescending(a, b)) + sign(compareVersionsDescending(b, a))).toBe(0);
        expect(compareVersionsDescending(a, a)).toBe(0);
      }),
      { numRuns: 1000 },
    );
  });

  it("is transitive", () => {
    fc.assert(
      fc.property(version, version, version, (a, b, c) => {
        if (compareVersionsDescending(a, b) < 0 && compareVersionsDescending(b, c) < 0) {
          expect(compareVersionsDescending(a, c)).toBeLessThan(0);
        }
      }),
      { numRuns: 1000 },
    );
  });

  it("puts a higher release first", () => {
    fc.assert(
      fc.property(fc.nat(50), fc.nat(50), fc.nat(50), (major, minor, patch) => {
        expect(compareVersionsDescending(`v${major}.${minor}.${patch + 1}`, `v${major}.${minor}.${patch}`)).toBeLessThan(0);
        expect(compareVersionsDescending(`v${major}.${minor + 1}.0`, `v${major}.${minor}.${patch}`)).toBeLessThan(0);
        expect(compareVersionsDescending(`v${major}.${minor}.${patch}`, `v${major}.${minor}.${patch}-rc.1`)).toBeLessThan(0);
      }),
      RUNS,
    );
  });
});
