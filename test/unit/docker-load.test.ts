/**
 * DockerodeEngine.loadImage against a stand-in engine on a unix socket: how the archive's pooled
 * chunks are written, given back and stopped, which a real engine cannot be made to show.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { DockerodeEngine } from "../../src/clients/docker.js";
import { IntegrityError, RemoteError } from "../../src/errors.js";
import type { PooledChunk } from "../../src/transfer/buffer-pool.js";

const CHUNK = 256 * 1024;

let dir: string;
let server: Server;
let savedDockerHost: string | undefined;

/** Starts the stand-in engine; `handle` answers POST …/images/load. */
async function engine(handle: (request: IncomingMessage, response: ServerResponse) => void): Promise<DockerodeEngine> {
  const socket = join(dir, "docker.sock");
  server = createServer(handle);
  await new Promise<void>((resolve) => server.listen(socket, resolve));
  process.env.DOCKER_HOST = `unix://${socket}`;
  return new DockerodeEngine({ env: process.env });
}

/** `count` chunks of CHUNK bytes, recording how many were handed out and released; `finished` is set when the source is closed. */
function archive(count: number, options: { failAfter?: number } = {}) {
  const state = { pulled: 0, released: 0, finished: false, bytes: Buffer.alloc(0) };
  const chunks: Buffer[] = Array.from({ length: count }, (_, index) => Buffer.alloc(CHUNK, index % 251));
  state.bytes = Buffer.concat(chunks);
  async function* source(): AsyncGenerator<PooledChunk> {
    try {
      for (const [index, data] of chunks.entries()) {
        if (options.failAfter === index) throw new IntegrityError("checksum mismatch");
        state.pulled++;
        yield { data, release: () => state.released++ };
      }
    } finally {
      state.finished = true;
    }
  }
  return { state, source };
}

function loaded(response: ServerResponse, name: string): void {
  response.writeHead(200, { "Content-Type": "application/json" });
  response.end(`${JSON.stringify({ stream: `Loaded image: ${name}\n` })}\n`);
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "s3dock-load-"));
  savedDockerHost = process.env.DOCKER_HOST;
});

afterEach(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
  if (savedDockerHost === undefined) delete process.env.DOCKER_HOST;
  else process.env.DOCKER_HOST = savedDockerHost;
  rmSync(dir, { recursive: true, force: true });
});

describe("DockerodeEngine.loadImage", () => {
  it.each([1, 2])("sends the archive whole and gives every chunk back (%i queued)", async (queued) => {
    let received = Buffer.alloc(0);
    const docker = await engine(async (request, response) => {
      const parts: Buffer[] = [];
      for await (const part of request) parts.push(part as Buffer);
      received = Buffer.concat(parts);
      loaded(response, "app:20250101-0000-abcdef0");
    });
    const { state, source } = archive(40);
    await expect(docker.loadImage(source(), { queued })).resolves.toEqual(["app:20250101-0000-abcdef0"]);
    expect(received.equals(state.bytes)).toBe(true);
    expect(state.released).toBe(40);
  });

  it("gives a chunk back only once the connection has taken it: while the engine reads nothing, the chunks stay out", async () => {
    let paused!: IncomingMessage;
    const docker = await engine((request) => {
      paused = request;
      request.pause();
    });
    // Far more than the socket buffers hold.
    const { state, source } = archive(200);
    const loading = docker.loadImage(source());
    loading.catch(() => undefined);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(state.released).toBeLessThan(200 - 8); // the kernel holds a few MiB at most; the rest waits
    paused.resume();
    paused.socket.destroy();
    await expect(loading).rejects.toThrow();
  });

  it("a failing archive: rejects with the archive's own error, not the engine's complaint about a cut-off body", async () => {
    const docker = await engine(async (request, response) => {
      const ended = await new Promise<boolean>((resolve) => {
        request.on("end", () => resolve(true));
        request.on("error", () => resolve(false)); // the client gave up on the body
        request.resume();
      });
      if (!ended) return;
      response.writeHead(500, { "Content-Type": "application/json" });
      response.end(JSON.stringify({ message: "unexpected EOF" }));
    });
    const { state, source } = archive(20, { failAfter: 10 });
    await expect(docker.loadImage(source())).rejects.toThrow(IntegrityError);
    expect(state.finished).toBe(true);
    expect(state.released).toBe(10);
  });

  it.each([1, 2])("the engine failing the load: rejects with its message, stops reading the archive and gives back what it took (%i queued)", async (queued) => {
    const docker = await engine((_request, response) => {
      // Refuses at once, before reading the body, as an engine with a full disk can.
      response.writeHead(500, { "Content-Type": "application/json" });
      response.end(JSON.stringify({ message: "write /var/lib/docker/tmp/x: no space left on device" }));
    });
    const { state, source } = archive(400);
    const failure = await docker.loadImage(source(), { queued }).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(RemoteError);
    expect((failure as Error).message).toMatch(/ran out of disk space/);
    await expect.poll(() => state.finished, { timeout: 2000 }).toBe(true);
    expect(state.pulled).toBeLessThan(400);
    expect(state.released).toBe(state.pulled);
  });
});
