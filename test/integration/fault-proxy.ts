/**
 * A fault-injecting HTTP proxy in front of the real S3 server: the CLI talks to the proxy (its
 * AWS_ENDPOINT_URL), the proxy forwards every request unchanged (Host included, so SigV4 still
 * verifies) and answers with the server's real response, except where a rule says otherwise:
 * hold a request back before forwarding it, drop the connection after the server has applied a
 * request (a lost response), cut a body short, or stop sending in the middle of a body (a stall).
 * Each proxy has its own port, so a test can give each concurrent CLI process its own faults.
 */
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Socket } from "node:net";

export interface ProxiedRequest {
  readonly method: string;
  /** The object key, without the bucket (path-style requests). */
  readonly key: string;
  readonly query: URLSearchParams;
  readonly headers: IncomingMessage["headers"];
}

export type FaultAction =
  /** Waits this long before forwarding the request. */
  | { readonly kind: "delay"; readonly ms: number }
  /** Forwards the request (so the server applies it), then closes the connection without answering. */
  | { readonly kind: "drop-response" }
  /** Sends the status, the headers and the first `bytes` of the body, then closes the connection. */
  | { readonly kind: "short-body"; readonly bytes: number }
  /** Sends the status, the headers and the first `bytes` of the body, then sends nothing more, keeping the connection open. */
  | { readonly kind: "stall-body"; readonly bytes: number }
  /** Answers with this status (an S3 error document) without forwarding the request. */
  | { readonly kind: "fail"; readonly status: number };

export interface FaultRule {
  readonly match: (request: ProxiedRequest) => boolean;
  readonly action: FaultAction;
  /** How many matching requests get the fault (default 1); later ones pass through. */
  readonly times?: number;
}

export interface FaultProxy {
  readonly endpoint: string;
  /** Requests seen, in order (method and key), for assertions about what the CLI did. */
  readonly seen: ProxiedRequest[];
  /** How many times each rule has fired, by index. */
  readonly fired: number[];
  setRules(rules: FaultRule[]): void;
  close(): Promise<void>;
}

const UPSTREAM = new URL(process.env.S3DOCK_TEST_ENDPOINT ?? "http://127.0.0.1:7480");

function parse(req: IncomingMessage): ProxiedRequest {
  const url = new URL(req.url ?? "/", "http://proxy");
  const segments = url.pathname.split("/").slice(2);
  return { method: req.method ?? "GET", key: decodeURIComponent(segments.join("/")), query: url.searchParams, headers: req.headers };
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of req) parts.push(part as Buffer);
  return Buffer.concat(parts);
}

function forward(req: IncomingMessage, body: Buffer): Promise<{ status: number; headers: IncomingMessage["headers"]; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const upstream = httpRequest(
      { host: UPSTREAM.hostname, port: UPSTREAM.port, method: req.method, path: req.url, headers: req.headers },
      (res) => {
        readBody(res).then((bytes) => resolve({ status: res.statusCode ?? 502, headers: res.headers, body: bytes }), reject);
      },
    );
    upstream.on("error", reject);
    upstream.end(body);
  });
}

export async function startFaultProxy(): Promise<FaultProxy> {
  let rules: FaultRule[] = [];
  let fired: number[] = [];
  const seen: ProxiedRequest[] = [];
  const sockets = new Set<Socket>();
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const parsed = parse(req);
    seen.push(parsed);
    const index = rules.findIndex((rule, i) => (fired[i] ?? 0) < (rule.times ?? 1) && rule.match(parsed));
    const action = index >= 0 ? rules[index]!.action : undefined;
    if (index >= 0) fired[index] = (fired[index] ?? 0) + 1;
    const body = await readBody(req);
    if (action?.kind === "fail") {
      res.writeHead(action.status, { "content-type": "application/xml" });
      res.end(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code><Message>injected by the test proxy</Message></Error>`);
      return;
    }
    if (action?.kind === "delay") await sleep(action.ms);
    const answer = await forward(req, body);
    if (action?.kind === "drop-response") {
      req.socket.destroy();
      return;
    }
    // The headers as the server sent them: Content-Length stays the whole body's.
    const headers = { ...answer.headers };
    if (req.method !== "HEAD") {
      delete headers["transfer-encoding"];
      headers["content-length"] = String(answer.body.length);
    }
    res.writeHead(answer.status, headers);
    if (action?.kind === "short-body" || action?.kind === "stall-body") {
      res.write(answer.body.subarray(0, action.bytes));
      if (action.kind === "short-body") setTimeout(() => req.socket.destroy(), 50);
      return;
    }
    res.end(answer.body);
  };

  const server: Server = createServer((req, res) => {
    handle(req, res).catch(() => req.socket.destroy());
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    seen,
    get fired() {
      return fired;
    },
    setRules(next) {
      rules = next;
      fired = next.map(() => 0);
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Matches requests by method and key (a string is an exact key, a RegExp is tested against it). */
export function on(method: string, key: string | RegExp, extra: (request: ProxiedRequest) => boolean = () => true): (request: ProxiedRequest) => boolean {
  return (request) => request.method === method && (typeof key === "string" ? request.key === key : key.test(request.key)) && extra(request);
}
