/**
 * S3ObjectStore.getText refuses a document larger than any s3dock writes, without reading it whole:
 * by its Content-Length when the server sends one, and by counting when it does not (a chunked body
 * that never ends), against a tiny HTTP server standing in for S3.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { S3ObjectStore } from "../../src/clients/object-store.js";
import { MAX_DOCUMENT_BYTES } from "../../src/domain/documents.js";
import { IntegrityError } from "../../src/errors.js";

let server: Server | undefined;
afterEach(() => new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve())));

/** Serves GETs with `respond`; returns a store pointed at it. */
async function storeServing(respond: Parameters<typeof createServer>[1]): Promise<S3ObjectStore> {
  server = createServer(respond);
  await new Promise<void>((resolve) => server!.listen(0, "127.0.0.1", resolve));
  return new S3ObjectStore({
    bucket: "docs",
    region: "us-east-1",
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    credentials: { accessKeyId: "a", secretAccessKey: "b" },
    idleTimeoutMs: 30_000,
    retryCount: 0,
    maxSockets: 4,
    logger: pino({ level: "silent" }),
  });
}

describe("S3ObjectStore.getText", () => {
  it("reads a document of up to 64 KiB", async () => {
    const text = `{"pad":"${"x".repeat(MAX_DOCUMENT_BYTES - 12)}"}`;
    const store = await storeServing((_req, res) => {
      res.writeHead(200, { etag: '"e"', "content-length": Buffer.byteLength(text) });
      res.end(text);
    });
    expect((await store.getText("pointers/app/env.json"))?.text).toBe(text);
  });

  it("refuses a larger one by its Content-Length (the size in the message), before reading the body", async () => {
    let written = 0;
    const store = await storeServing((_req, res) => {
      res.writeHead(200, { etag: '"e"', "content-length": 10 * 1024 * 1024 });
      const chunk = Buffer.alloc(64 * 1024, 0x20);
      const more = () => {
        while (written < 10 * 1024 * 1024 && res.write(chunk)) written += chunk.length;
      };
      res.on("drain", more);
      more();
    });
    const error = await store.getText("pointers/app/huge.json").catch((failure: unknown) => failure);
    expect(error).toBeInstanceOf(IntegrityError);
    expect((error as Error).message).toBe(`s3://docs/pointers/app/huge.json is 10485760 bytes, more than any s3dock document (64 KiB): refusing to read it`);
  });

  it("stops reading a body with no length (chunked, endless) just past 64 KiB", async () => {
    const store = await storeServing((_req, res) => {
      res.writeHead(200, { etag: '"e"', "transfer-encoding": "chunked" });
      const chunk = Buffer.alloc(16 * 1024, 0x20);
      const more = () => {
        while (!res.destroyed && res.write(chunk));
      };
      res.on("drain", more);
      more();
    });
    const error = await store.getText("tags/app/v1.0.0.json").catch((failure: unknown) => failure);
    expect(error).toBeInstanceOf(IntegrityError);
    expect((error as Error).message).toMatch(/is over 65536 bytes, more than any s3dock document/);
  });
});
