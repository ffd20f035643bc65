/**
 * The conditional-write probe and the checked read-back fallback of S3ObjectStore, against a tiny
 * in-memory S3 fake over HTTP whose handling of If-None-Match / If-Match is chosen per test (the
 * real RGW honours them, so the fallback cannot be reached through it).
 */
import { createHash } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { S3ObjectStore } from "../../src/clients/object-store.js";
import { ConflictError } from "../../src/errors.js";

interface FakeOptions {
  readonly ifNoneMatch: "honour" | "ignore";
  /** "quoted": RFC 7232 (AWS); "bare": compares the bare digest only (Ceph RGW Pacific). */
  readonly ifMatch: "quoted" | "bare" | "ignore";
  /** Called after each stored PUT: lets a test play a concurrent writer. */
  readonly afterPut?: (key: string, objects: Map<string, Buffer>) => void;
}

const md5 = (body: Buffer): string => createHash("md5").update(body).digest("hex");

function startFake(options: FakeOptions): Promise<{ server: Server; endpoint: string; objects: Map<string, Buffer> }> {
  const objects = new Map<string, Buffer>();
  const fail = (res: ServerResponse, status: number, code: string) => {
    res.writeHead(status, { "content-type": "application/xml" });
    res.end(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>${code}</Message></Error>`);
  };
  const handle = (req: IncomingMessage, body: Buffer, res: ServerResponse) => {
    const key = decodeURIComponent(new URL(req.url!, "http://fake").pathname.split("/").slice(2).join("/"));
    const stored = objects.get(key);
    if (req.method === "PUT") {
      if (options.ifNoneMatch === "honour" && req.headers["if-none-match"] === "*" && stored) return fail(res, 412, "PreconditionFailed");
      const ifMatch = req.headers["if-match"];
      if (ifMatch !== undefined && options.ifMatch !== "ignore") {
        const expected = stored ? (options.ifMatch === "quoted" ? `"${md5(stored)}"` : md5(stored)) : undefined;
        if (ifMatch !== expected) return fail(res, 412, "PreconditionFailed");
      }
      objects.set(key, body);
      options.afterPut?.(key, objects);
      res.writeHead(200, { etag: `"${md5(body)}"` });
      return res.end();
    }
    if (req.method === "DELETE") {
      objects.delete(key);
      res.writeHead(204);
      return res.end();
    }
    if (!stored) {
      if (req.method === "HEAD") {
        res.writeHead(404);
        return res.end();
      }
      return fail(res, 404, "NoSuchKey");
    }
    res.writeHead(200, { etag: `"${md5(stored)}"`, "content-length": stored.length, "last-modified": new Date().toUTCString() });
    res.end(req.method === "HEAD" ? undefined : stored);
  };
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => handle(req, Buffer.concat(chunks), res));
  });
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve({ server, endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, objects })),
  );
}

let running: Server | undefined;
afterEach(() => {
  running?.close();
  running = undefined;
});

async function storeOver(options: FakeOptions): Promise<{ store: S3ObjectStore; objects: Map<string, Buffer>; logs: string[] }> {
  const fake = await startFake(options);
  running = fake.server;
  const logs: string[] = [];
  const logger = pino({ level: "debug" }, { write: (line: string) => logs.push((JSON.parse(line) as { msg: string }).msg) });
  const store = new S3ObjectStore({
    bucket: "fake",
    region: "us-east-1",
    endpoint: fake.endpoint,
    credentials: { accessKeyId: "fake", secretAccessKey: "fake-secret" },
    retryCount: 0,
    maxSockets: 4,
    idleTimeoutMs: 30_000,
    logger,
  });
  return { store, objects: fake.objects, logs };
}

describe("conditional-write probe", () => {
  it("a server that honours both headers (quoted ETags) gets real conditional writes", async () => {
    const { store, logs } = await storeOver({ ifNoneMatch: "honour", ifMatch: "quoted" });
    expect(await store.conditionalWritesHonoured()).toBe(true);
    expect(logs).toContain("the S3 server honours conditional writes");
  });

  it("a server that compares If-Match against the bare digest (RGW) still gets conditional writes, with bare ETags", async () => {
    const { store, logs } = await storeOver({ ifNoneMatch: "honour", ifMatch: "bare" });
    expect(await store.conditionalWritesHonoured()).toBe(true);
    expect(logs).toContain("the S3 server honours conditional writes (If-Match with bare ETags)");
    const first = await store.putText("tags/a/v1.json", "one", { ifNoneMatch: true });
    await store.putText("tags/a/v1.json", "two", { ifMatch: first.etag });
    expect((await store.getText("tags/a/v1.json"))?.text).toBe("two");
    await expect(store.putText("tags/a/v1.json", "three", { ifMatch: first.etag })).rejects.toThrow(ConflictError);
  });

  it("a server that ignores If-Match (but honours If-None-Match) falls back to read-back", async () => {
    const { store, logs } = await storeOver({ ifNoneMatch: "honour", ifMatch: "ignore" });
    expect(await store.conditionalWritesHonoured()).toBe(false);
    expect(logs).toContain("the S3 server ignores conditional writes: falling back to checked read-back");
  });

  it("leaves no probe object behind", async () => {
    const { store, objects } = await storeOver({ ifNoneMatch: "honour", ifMatch: "quoted" });
    await store.conditionalWritesHonoured();
    expect([...objects.keys()]).toEqual([]);
  });
});

describe("checked read-back on a server that ignores conditional headers", () => {
  const ignoring: FakeOptions = { ifNoneMatch: "ignore", ifMatch: "ignore" };

  it("create-only: writes an absent key, refuses an existing one and leaves it unchanged", async () => {
    const { store, objects } = await storeOver(ignoring);
    await store.putText("tags/a/v1.json", "mine", { ifNoneMatch: true });
    await expect(store.putText("tags/a/v1.json", "theirs", { ifNoneMatch: true })).rejects.toThrow(/checked by read-back/);
    expect(objects.get("tags/a/v1.json")?.toString()).toBe("mine");
  });

  it("If-Match: replaces the version read, refuses a stale ETag", async () => {
    const { store, objects } = await storeOver(ignoring);
    const first = await store.putText("pointers/a/prod.json", "one", { ifNoneMatch: true });
    const second = await store.putText("pointers/a/prod.json", "two", { ifMatch: first.etag });
    await expect(store.putText("pointers/a/prod.json", "lost update", { ifMatch: first.etag })).rejects.toThrow(ConflictError);
    expect(objects.get("pointers/a/prod.json")?.toString()).toBe("two");
    await store.putText("pointers/a/prod.json", "three", { ifMatch: second.etag });
    expect(objects.get("pointers/a/prod.json")?.toString()).toBe("three");
  });

  it("reports a conflict when another writer's PUT lands between ours and the read-back", async () => {
    const { store } = await storeOver({
      ...ignoring,
      afterPut: (key, objects) => {
        if (key === "pointers/a/prod.json" && objects.get(key)?.toString() === "mine") objects.set(key, Buffer.from("theirs"));
      },
    });
    await expect(store.putText("pointers/a/prod.json", "mine", { ifNoneMatch: true })).rejects.toThrow(/while writing \(checked by read-back\)/);
  });
});
