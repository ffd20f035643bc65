import { describe, expect, it } from "vitest";
import { IntegrityError } from "../../src/errors.js";
import { auditEventSchema, checkMetadataMatchesKey, imageMetadataSchema, parseDocument, pointerSchema, serializeDocument } from "../../src/domain/documents.js";

// Samples as the Go s3dock v0.1.10 writes them (/work/shared/upstream-format.md).
const GO_METADATA = `{
  "checksum": "9b2cf535f27731c974343645a3985328",
  "size": 7650812,
  "created_at": "2025-07-21T21:20:03.512340117+02:00",
  "git_hash": "f7a5a27",
  "git_time": "20250721-2118",
  "image_tag": "myapp:20250721-2118-f7a5a27",
  "app_name": "myapp"
}`;

const GO_TAG = `{
  "target_type": "image",
  "target_path": "images/myapp/202507/myapp-20250721-2118-f7a5a27.tar.gz",
  "promoted_at": "2025-07-22T09:01:44.120003+02:00",
  "promoted_by": "alice",
  "git_hash": "f7a5a27",
  "git_time": "20250721-2118",
  "source_image": "myapp:20250721-2118-f7a5a27"
}`;

const GO_POINTER_FROM_TAG = `{
  "target_type": "tag",
  "target_path": "tags/myapp/v1.2.0.json",
  "promoted_at": "2025-07-22T09:01:44Z",
  "promoted_by": "unknown",
  "git_hash": "f7a5a27",
  "git_time": "20250721-2118",
  "source_image": "myapp:20250721-2118-f7a5a27",
  "source_tag": "v1.2.0"
}`;

const GO_AUDIT = `{
  "event_type": "promotion",
  "timestamp": "2025-07-22T09:01:44.2+02:00",
  "user": "alice",
  "app_name": "myapp",
  "git_hash": "f7a5a27",
  "git_time": "20250721-2118",
  "details": {
    "environment": "production",
    "source": "myapp:20250721-2118-f7a5a27",
    "source_type": "image",
    "pointer_path": "pointers/myapp/production.json",
    "previous_target": "images/myapp/202507/myapp-20250715-0930-def5678.tar.gz"
  }
}`;

const WHERE = "s3://bucket/images/myapp/202507/x.json";

describe("parseDocument on Go-written documents", () => {
  it("reads image metadata", () => {
    const metadata = parseDocument(imageMetadataSchema, GO_METADATA, WHERE);
    expect(metadata).toEqual(JSON.parse(GO_METADATA));
    expect(metadata.image_id).toBeUndefined();
  });

  it("reads a tag and a pointer promoted from a tag", () => {
    expect(parseDocument(pointerSchema, GO_TAG, WHERE).target_type).toBe("image");
    const pointer = parseDocument(pointerSchema, GO_POINTER_FROM_TAG, WHERE);
    expect(pointer).toMatchObject({ target_type: "tag", target_path: "tags/myapp/v1.2.0.json", source_tag: "v1.2.0" });
  });

  it("reads an audit event with its details", () => {
    const event = parseDocument(auditEventSchema, GO_AUDIT, WHERE);
    expect(event.details.previous_target).toBe("images/myapp/202507/myapp-20250715-0930-def5678.tar.gz");
  });

  it("keeps unknown fields", () => {
    const text = JSON.stringify({ ...JSON.parse(GO_METADATA), future_field: { a: [1, 2] }, note: "x" });
    const metadata = parseDocument(imageMetadataSchema, text, WHERE) as Record<string, unknown>;
    expect(metadata.future_field).toEqual({ a: [1, 2] });
    expect(metadata.note).toBe("x");
    const pointer = parseDocument(pointerSchema, JSON.stringify({ ...JSON.parse(GO_TAG), extra: true }), WHERE) as Record<string, unknown>;
    expect(pointer.extra).toBe(true);
  });

  it("accepts our own added fields", () => {
    const ours = {
      ...JSON.parse(GO_METADATA),
      sha256: "a".repeat(64),
      image_id: `sha256:${"b".repeat(64)}`,
      layers: ["sha256:1"],
      uncompressed_size: 10,
      compression: "gzip:1",
      object_etag: '"abc-2"',
    };
    expect(parseDocument(imageMetadataSchema, JSON.stringify(ours), WHERE)).toEqual(ours);
  });
});

describe("parseDocument failures", () => {
  const catchError = (fn: () => unknown): Error => {
    try {
      fn();
    } catch (error) {
      return error as Error;
    }
    throw new Error("did not throw");
  };

  it("bad JSON → IntegrityError naming the location", () => {
    const error = catchError(() => parseDocument(imageMetadataSchema, "{not json", WHERE));
    expect(error).toBeInstanceOf(IntegrityError);
    expect(error.message).toContain(WHERE);
    expect(error.message).toMatch(/not valid JSON/);
  });

  it.each([
    ["size as a string", { size: "7650812" }, "size"],
    ["negative size", { size: -1 }, "size"],
    ["fractional size", { size: 1.5 }, "size"],
    ["uppercase checksum", { checksum: "9B2CF535F27731C974343645A3985328" }, "checksum"],
    ["short checksum", { checksum: "abc" }, "checksum"],
    ["non-RFC 3339 created_at", { created_at: "2025-07-21 21:20:03" }, "created_at"],
    ["bad git_time", { git_time: "2025-07-21" }, "git_time"],
    ["bad git_hash", { git_hash: "XYZ" }, "git_hash"],
    ["missing app_name", { app_name: undefined }, "app_name"],
    ["bad image_id", { image_id: "abc" }, "image_id"],
  ])("metadata with %s → IntegrityError naming %s", (_label, change, field) => {
    const document = { ...JSON.parse(GO_METADATA), ...change };
    const error = catchError(() => parseDocument(imageMetadataSchema, JSON.stringify(document), WHERE));
    expect(error).toBeInstanceOf(IntegrityError);
    expect(error.message).toContain(WHERE);
    expect(error.message).toContain(`${field}:`);
  });

  it.each(["null", "[]", "42", '"text"', "{}"])("%s is not a document", (text) => {
    expect(() => parseDocument(pointerSchema, text, WHERE)).toThrow(IntegrityError);
  });

  it("a pointer with an unknown target_type is refused", () => {
    const text = JSON.stringify({ ...JSON.parse(GO_TAG), target_type: "branch" });
    expect(() => parseDocument(pointerSchema, text, WHERE)).toThrow(/target_type/);
  });

  it("an audit event with non-object details is refused", () => {
    const text = JSON.stringify({ ...JSON.parse(GO_AUDIT), details: "x" });
    expect(() => parseDocument(auditEventSchema, text, WHERE)).toThrow(/details/);
  });
});

describe("serializeDocument", () => {
  it("indents two spaces, as the Go tool does", () => {
    const text = serializeDocument(JSON.parse(GO_METADATA));
    expect(text).toBe(GO_METADATA);
    expect(serializeDocument({ a: { b: 1 } })).toBe('{\n  "a": {\n    "b": 1\n  }\n}');
  });

  it("round-trips through parseDocument", () => {
    const pointer = parseDocument(pointerSchema, GO_POINTER_FROM_TAG, WHERE);
    expect(parseDocument(pointerSchema, serializeDocument(pointer), WHERE)).toEqual(pointer);
  });
});

describe("checkMetadataMatchesKey", () => {
  const metadata = parseDocument(imageMetadataSchema, GO_METADATA, "m");
  const ref = { app: "myapp", gitTime: "20250721-2118", gitHash: "f7a5a27" };

  it("accepts metadata naming the image its key names, also with a full-length git hash", () => {
    expect(() => checkMetadataMatchesKey(metadata, ref, "m")).not.toThrow();
    expect(() => checkMetadataMatchesKey({ ...metadata, git_hash: `f7a5a27${"0".repeat(33)}` }, ref, "m")).not.toThrow();
  });

  it.each([
    ["app_name", { app_name: "other" }],
    ["image_tag", { image_tag: "myapp:20250101-0000-0000000" }],
    ["git_time", { git_time: "20250101-0000" }],
    ["git_hash", { git_hash: "0000000" }],
  ])("refuses metadata whose %s disagrees with its key", (field, change) => {
    expect(() => checkMetadataMatchesKey({ ...metadata, ...change }, ref, "s3://b/images/myapp/x.json")).toThrow(
      new IntegrityError(`s3://b/images/myapp/x.json records ${field} ${JSON.stringify(Object.values(change)[0])} but its key names ${JSON.stringify({ app_name: "myapp", image_tag: "myapp:20250721-2118-f7a5a27", git_time: "20250721-2118", git_hash: "f7a5a27" }[field])}: refusing to use it`),
    );
  });
});
