/**
 * The multipart upload of S3ObjectStore, with the SDK client's send() played by a script: part
 * order, the single-PUT path, and that a failed part aborts the upload instead of completing it.
 * (The real RGW runs the same code in the integration, crash and fault tests.)
 */
import { Readable } from "node:stream";
import pino from "pino";
import { describe, expect, it } from "vitest";
import { partSizeFor, S3ObjectStore } from "../../src/clients/object-store.js";

interface Sent {
  readonly command: string;
  readonly input: Record<string, unknown>;
}

function storeWith(onPart: (partNumber: number) => Promise<void> = async () => undefined) {
  const store = new S3ObjectStore({
    bucket: "fake",
    region: "us-east-1",
    endpoint: "http://127.0.0.1:9",
    credentials: { accessKeyId: "fake", secretAccessKey: "fake-secret" },
    retryCount: 0,
    maxSockets: 4,
    idleTimeoutMs: 30_000,
    logger: pino({ level: "silent" }),
  });
  const sent: Sent[] = [];
  const bodies = new Map<number, Buffer>();
  const send = async (command: { constructor: { name: string }; input: Record<string, unknown> }) => {
    const name = command.constructor.name;
    sent.push({ command: name, input: command.input });
    switch (name) {
      case "CreateMultipartUploadCommand":
        return { UploadId: "upload-1" };
      case "UploadPartCommand": {
        const partNumber = command.input.PartNumber as number;
        // A copy: the store reuses part buffers once a part is sent.
        bodies.set(partNumber, Buffer.from(command.input.Body as Buffer));
        await onPart(partNumber);
        return { ETag: `"etag-${partNumber}"` };
      }
      case "CompleteMultipartUploadCommand":
        return { ETag: '"final"' };
      case "PutObjectCommand":
        return { ETag: '"single"' };
      case "AbortMultipartUploadCommand":
        return {};
      default:
        throw new Error(`unexpected ${name}`);
    }
  };
  (store as unknown as { client: { send: typeof send } }).client = { send };
  return { store, sent, bodies };
}

const bytes = (length: number) => Buffer.from(Array.from({ length }, (_, i) => (i * 7) % 251));
const body = (data: Buffer, piece = 3) =>
  Readable.from(
    (function* () {
      for (let i = 0; i < data.length; i += piece) yield data.subarray(i, i + piece);
    })(),
  );

describe("S3ObjectStore.upload", () => {
  it("sends parts of the part size in order, each reported, and completes with them sorted", async () => {
    const data = bytes(100);
    // Later parts finish first: completion order must not decide part order.
    const { store, sent, bodies } = storeWith((n) => new Promise((resolve) => setTimeout(resolve, (10 - n) * 3)));
    const progress: number[] = [];
    const result = await store.upload("images/a.tar.gz", body(data), { partSizeBytes: 16, concurrency: 3, onProgress: (n) => progress.push(n) });
    expect(result.etag).toBe('"final"');
    expect([...bodies.keys()].sort((a, b) => a - b)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(Buffer.concat([...bodies.entries()].sort(([a], [b]) => a - b).map(([, part]) => part)).equals(data)).toBe(true);
    const complete = sent.find((s) => s.command === "CompleteMultipartUploadCommand")!;
    expect((complete.input.MultipartUpload as { Parts: { PartNumber: number; ETag: string }[] }).Parts).toEqual(
      [1, 2, 3, 4, 5, 6, 7].map((n) => ({ PartNumber: n, ETag: `"etag-${n}"` })),
    );
    expect(progress.at(-1)).toBe(100);
    expect(sent.some((s) => s.command === "AbortMultipartUploadCommand")).toBe(false);
  });

  it("sends a body that fits one part as one PUT", async () => {
    const { store, sent } = storeWith();
    const result = await store.upload("images/small.tar.gz", body(bytes(16)), { partSizeBytes: 16, concurrency: 2 });
    expect(result.etag).toBe('"single"');
    expect(sent.map((s) => s.command)).toEqual(["PutObjectCommand"]);
    expect((sent[0]!.input.Body as Buffer).length).toBe(16);
  });

  it("aborts the upload and completes nothing when a part fails", async () => {
    const { store, sent } = storeWith(async (n) => {
      if (n === 3) throw Object.assign(new Error("We encountered an internal error."), { name: "InternalError" });
    });
    await expect(store.upload("images/b.tar.gz", body(bytes(200)), { partSizeBytes: 16, concurrency: 2 })).rejects.toThrow(
      /cannot upload s3:\/\/fake\/images\/b\.tar\.gz: InternalError/,
    );
    expect(sent.some((s) => s.command === "AbortMultipartUploadCommand" && s.input.UploadId === "upload-1")).toBe(true);
    expect(sent.some((s) => s.command === "CompleteMultipartUploadCommand")).toBe(false);
  });
});

describe("partSizeFor", () => {
  const MiB = 1024 * 1024;
  const GiB = 1024 * MiB;

  it("keeps the configured part size while the body fits 10,000 of them", () => {
    expect(partSizeFor(5 * MiB, undefined)).toBe(5 * MiB);
    expect(partSizeFor(5 * MiB, 0)).toBe(5 * MiB);
    expect(partSizeFor(5 * MiB, GiB)).toBe(5 * MiB);
    expect(partSizeFor(5 * MiB, 48 * GiB)).toBe(5 * MiB);
  });

  it("raises it to whole MiB for larger bodies, so that they fit with 1% to spare", () => {
    for (const size of [49.6 * GiB, 60 * GiB, 100 * GiB, 1024 * GiB, 60 * GiB + 1]) {
      const part = partSizeFor(5 * MiB, size);
      expect(part % MiB).toBe(0);
      expect(part).toBeGreaterThan(5 * MiB);
      expect(Math.ceil((size * 1.01) / part)).toBeLessThanOrEqual(10_000);
      // Not more than a MiB above what is needed.
      expect(Math.ceil((size * 1.01) / (part - MiB))).toBeGreaterThan(10_000);
    }
    expect(partSizeFor(64 * MiB, 100 * GiB)).toBe(64 * MiB);
  });

  it("uploads an expected-large body in the raised part size", async () => {
    const { store, bodies } = storeWith();
    // 16-byte minimum, but 3,000,000 expected bytes need parts of at least 1 MiB.
    await store.upload("images/c.tar.gz", body(bytes(3 * MiB), 64 * 1024), { partSizeBytes: 16, expectedBytes: 3_000_000, concurrency: 2 });
    expect([...bodies.values()].map((part) => part.length)).toEqual([MiB, MiB, MiB]);
  });
});
