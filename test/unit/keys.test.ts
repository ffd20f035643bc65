import { describe, expect, it } from "vitest";
import {
  appFromPrefix,
  appOfTarget,
  archivedImageKey,
  archivedTagKey,
  archivePrefix,
  auditKey,
  imageBaseName,
  imageKey,
  imageKeyFor,
  imagesPrefix,
  metadataKeyFor,
  monthFromPrefix,
  nameInPrefix,
  parseImageKey,
  pointerKey,
  pointersPrefix,
  ROOT_PREFIXES,
  tagKey,
  tagsPrefix,
} from "../../src/domain/keys.js";
import { parseImageRef } from "../../src/domain/names.js";

const ref = parseImageRef("myapp:20250721-2118-f7a5a27");
const dashed = parseImageRef("my-app-2:20250721-2118-f7a5a27");

describe("prefixes", () => {
  it("builds the per-app prefixes with a trailing slash", () => {
    expect(imagesPrefix("myapp")).toBe("images/myapp/");
    expect(tagsPrefix("myapp")).toBe("tags/myapp/");
    expect(pointersPrefix("myapp")).toBe("pointers/myapp/");
    expect(archivePrefix("myapp")).toBe("archive/myapp/");
    expect(ROOT_PREFIXES).toEqual(["images/", "tags/", "pointers/"]);
  });

  it.each(["", ".", "..", "a/b", "a\\b"])("refuses the unsafe app segment %j", (app) => {
    expect(() => imagesPrefix(app)).toThrow(/unsafe object key segment/);
    expect(() => tagsPrefix(app)).toThrow(/unsafe/);
    expect(() => pointersPrefix(app)).toThrow(/unsafe/);
    expect(() => archivePrefix(app)).toThrow(/unsafe/);
    expect(() => tagKey(app, "v1.0.0")).toThrow(/unsafe/);
    expect(() => pointerKey(app, "prod")).toThrow(/unsafe/);
    expect(() => auditKey(app, "202507", "20250722-0901", "push", "f7a5a27", "ab12")).toThrow(/unsafe/);
  });
});

describe("image keys", () => {
  it("builds the Go layout", () => {
    expect(imageBaseName(ref)).toBe("myapp-20250721-2118-f7a5a27");
    expect(imageKey(ref, "202507")).toBe("images/myapp/202507/myapp-20250721-2118-f7a5a27.tar.gz");
  });

  it("refuses an unsafe month", () => {
    expect(() => imageKey(ref, "..")).toThrow(/unsafe/);
    expect(() => imageKey(ref, "")).toThrow(/unsafe/);
    expect(() => imageKey(ref, "2025/07")).toThrow(/unsafe/);
  });

  it("maps image and metadata keys into each other", () => {
    const key = imageKey(ref, "202507");
    expect(metadataKeyFor(key)).toBe("images/myapp/202507/myapp-20250721-2118-f7a5a27.json");
    expect(imageKeyFor(metadataKeyFor(key))).toBe(key);
    expect(() => metadataKeyFor("images/myapp/202507/x.json")).toThrow(/not an image key/);
    expect(() => imageKeyFor("images/myapp/202507/x.tar.gz")).toThrow(/not a metadata key/);
  });

  it("parses image and metadata keys", () => {
    expect(parseImageKey("images/myapp/202507/myapp-20250721-2118-f7a5a27.tar.gz")).toEqual({
      app: "myapp",
      gitTime: "20250721-2118",
      gitHash: "f7a5a27",
      month: "202507",
      ref: "myapp:20250721-2118-f7a5a27",
      kind: "image",
    });
    expect(parseImageKey("images/myapp/202507/myapp-20250721-2118-f7a5a27.json")?.kind).toBe("metadata");
  });

  it("parses the file name from the right, so dashed app names work", () => {
    const parsed = parseImageKey(imageKey(dashed, "202601"));
    expect(parsed).toMatchObject({ app: "my-app-2", gitTime: "20250721-2118", gitHash: "f7a5a27", month: "202601", ref: "my-app-2:20250721-2118-f7a5a27" });
  });

  it.each([
    "images/myapp/202507/other-20250721-2118-f7a5a27.tar.gz",
    "images/myapp/2025-07/myapp-20250721-2118-f7a5a27.tar.gz",
    "images/myapp/202507/myapp-20250721-2118-f7a5a27.tar",
    "images/myapp/202507/myapp-20250721-2118-F7A5A27.tar.gz",
    "images/myapp/202507/myapp-20250721-2118-f7a5a2.tar.gz",
    "images/myapp/202507/sub/myapp-20250721-2118-f7a5a27.tar.gz",
    "archive/myapp/202507/myapp-20250721-2118-f7a5a27.tar.gz",
    "tags/myapp/v1.0.0.json",
    "/images/myapp/202507/myapp-20250721-2118-f7a5a27.tar.gz",
    "images/myapp/202507/",
    "",
  ])("rejects the foreign key %j", (key) => {
    expect(parseImageKey(key)).toBeUndefined();
  });
});

describe("tag, pointer and archive keys", () => {
  it("builds tag and pointer keys", () => {
    expect(tagKey("myapp", "v1.2.0")).toBe("tags/myapp/v1.2.0.json");
    expect(pointerKey("myapp", "production")).toBe("pointers/myapp/production.json");
    expect(() => tagKey("myapp", "..")).toThrow(/unsafe/);
    expect(() => pointerKey("myapp", "a/b")).toThrow(/unsafe/);
  });

  it("archives an image under its original month with the archiving stamp", () => {
    const key = imageKey(dashed, "202507");
    expect(archivedImageKey(key, "20250801-1200", "1a2b3c4d")).toBe("archive/my-app-2/202507/my-app-2-20250721-2118-f7a5a27-archived-on-20250801-1200-1a2b3c4d.tar.gz");
    expect(metadataKeyFor(archivedImageKey(key, "20250801-1200", "1a2b3c4d"))).toMatch(/-archived-on-20250801-1200-1a2b3c4d\.json$/);
    expect(() => archivedImageKey(metadataKeyFor(key), "20250801-1200", "u")).toThrow(/not an image key/);
    expect(() => archivedImageKey("tags/myapp/v1.json", "20250801-1200", "u")).toThrow(/not an image key/);
  });

  it("archives a tag", () => {
    expect(archivedTagKey("myapp", "v1.2.0", "20250801-1200", "1a2b3c4d")).toBe("archive/myapp/tags/v1.2.0-archived-on-20250801-1200-1a2b3c4d.json");
    expect(() => archivedTagKey("myapp", "a/b", "20250801-1200", "u")).toThrow(/unsafe/);
  });
});

describe("auditKey", () => {
  it("is the Go layout plus a unique suffix", () => {
    expect(auditKey("myapp", "202507", "20250722-0901", "promotion", "f7a5a27", "0a1b2c3d")).toBe(
      "audit/myapp/202507/20250722-0901-promotion-f7a5a27-0a1b2c3d.json",
    );
  });

  it("differs for two same-minute events when the unique part differs", () => {
    const a = auditKey("myapp", "202507", "20250722-0901", "push", "f7a5a27", "aaaa");
    const b = auditKey("myapp", "202507", "20250722-0901", "push", "f7a5a27", "bbbb");
    expect(a).not.toBe(b);
  });

  it("ends with the unique suffix", () => {
    expect(auditKey("myapp", "202507", "20250722-0901", "push", "f7a5a27", "x")).toMatch(/-x\.json$/);
  });
});

describe("prefix readers", () => {
  it("appFromPrefix reads the second segment of a common prefix", () => {
    expect(appFromPrefix("images/myapp/")).toBe("myapp");
    expect(appFromPrefix("tags/my-app/")).toBe("my-app");
    expect(appFromPrefix("pointers/x/")).toBe("x");
    expect(appFromPrefix("images//")).toBeUndefined();
    expect(appFromPrefix("images/myapp")).toBeUndefined();
    expect(appFromPrefix("images/myapp/202507/")).toBeUndefined();
  });

  it("monthFromPrefix reads YYYYMM folders only", () => {
    expect(monthFromPrefix("images/myapp/202507/")).toBe("202507");
    expect(monthFromPrefix("images/my-app/202512/")).toBe("202512");
    expect(monthFromPrefix("images/myapp/2025/")).toBeUndefined();
    expect(monthFromPrefix("images/myapp/202507")).toBeUndefined();
    expect(monthFromPrefix("tags/myapp/202507/")).toBeUndefined();
  });

  it("nameInPrefix returns the document name directly under the prefix", () => {
    expect(nameInPrefix("tags/myapp/", "tags/myapp/v1.2.0.json")).toBe("v1.2.0");
    expect(nameInPrefix("pointers/myapp/", "pointers/myapp/production.json")).toBe("production");
    expect(nameInPrefix("tags/myapp/", "tags/myapp/sub/v1.json")).toBeUndefined();
    expect(nameInPrefix("tags/myapp/", "tags/myapp/.json")).toBeUndefined();
    expect(nameInPrefix("tags/myapp/", "tags/myapp/v1.2.0.txt")).toBeUndefined();
    expect(nameInPrefix("tags/myapp/", "tags/myapp-2/v1.json")).toBeUndefined();
  });
});

describe("appOfTarget", () => {
  it("names the app whose own image or tag a target path is, and nothing for anything else", () => {
    expect(appOfTarget("image", "images/web-api/202507/web-api-20250721-2118-f7a5a27.tar.gz")).toBe("web-api");
    expect(appOfTarget("image", "images/web/202507/web-api-20250721-2118-f7a5a27.tar.gz")).toBeUndefined();
    expect(appOfTarget("image", "images/web/202507/web-20250721-2118-f7a5a27.json")).toBeUndefined();
    expect(appOfTarget("tag", "tags/web/v1.0.0.json")).toBe("web");
    expect(appOfTarget("tag", "tags/web/x/v1.0.0.json")).toBeUndefined();
    expect(appOfTarget("tag", "pointers/web/prod.json")).toBeUndefined();
    expect(appOfTarget("tag", "images/web/202507/web-20250721-2118-f7a5a27.tar.gz")).toBeUndefined();
  });
});
