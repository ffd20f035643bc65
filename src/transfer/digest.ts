/**
 * Byte counts, MD5 (the Go tool's checksum) and SHA-256: as a plain accumulator, as a pass-through
 * stage, and on a worker thread. Each digest can be switched off where nobody reads it: hashing costs CPU.
 */
import { createHash, type Hash } from "node:crypto";
import { Transform, type TransformCallback } from "node:stream";
import { Worker } from "node:worker_threads";
import { OperationError } from "../errors.js";

export interface Digests {
  /** Empty when not computed. */
  readonly md5: string;
  /** Empty when not computed. */
  readonly sha256: string;
  readonly size: number;
}

type Algorithms = { readonly md5?: boolean; readonly sha256?: boolean };

/** MD5 and/or SHA-256 and a byte count over whatever is fed to it. */
export class Digester {
  private readonly md5: Hash | undefined;
  private readonly sha256: Hash | undefined;
  private bytes = 0;

  constructor(algorithms: Algorithms = {}) {
    this.md5 = algorithms.md5 === false ? undefined : createHash("md5");
    this.sha256 = algorithms.sha256 === false ? undefined : createHash("sha256");
  }

  /** Bytes fed so far. */
  get size(): number {
    return this.bytes;
  }

  update(chunk: Buffer): void {
    this.md5?.update(chunk);
    this.sha256?.update(chunk);
    this.bytes += chunk.length;
  }

  /** Call once, after the last update. */
  digests(): Digests {
    return { md5: this.md5?.digest("hex") ?? "", sha256: this.sha256?.digest("hex") ?? "", size: this.bytes };
  }
}

export class DigestTap extends Transform {
  private readonly digester: Digester;
  private result: Digests | undefined;

  constructor(
    private readonly onBytes?: (total: number) => void,
    algorithms: Algorithms = {},
  ) {
    super();
    this.digester = new Digester(algorithms);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.digester.update(chunk);
    this.onBytes?.(this.digester.size);
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    this.result = this.digester.digests();
    callback();
  }

  /** The digests of everything that passed; only after the input has ended. */
  digests(): Digests {
    if (!this.result) throw new Error("digests read before the stream ended");
    return this.result;
  }
}

/**
 * The worker: one message per chunk, answered once hashed; `null` asks for the hex digests and the
 * number of bytes it hashed.
 */
const HASHING_THREAD = `
const { parentPort, workerData } = require("node:worker_threads");
const { createHash } = require("node:crypto");
const hashes = workerData.map((name) => [name, createHash(name)]);
let size = 0;
parentPort.on("message", (chunk) => {
  if (chunk === null) {
    parentPort.postMessage({ size, ...Object.fromEntries(hashes.map(([name, hash]) => [name, hash.digest("hex")])) });
    return;
  }
  for (const [, hash] of hashes) hash.update(chunk);
  size += chunk.length;
  parentPort.postMessage(null);
});
`;

/**
 * A Digester on a worker thread, for chunks in SharedArrayBuffer memory, which the worker reads in
 * place. A gigabyte's SHA-256 is ~0.5 s of CPU: on the main thread it holds up everything else a
 * pull does there (HTTP reads, feeding the decompressor and the engine), so the stages take turns
 * instead of overlapping. Each update resolves once the worker has hashed the chunk: only then may
 * its memory be reused. If the thread fails, every update and the digests reject (an OperationError:
 * a local failure, not bad bytes) rather than wait. Close it when done, whatever happened: a live
 * thread keeps the process running.
 */
export class ThreadedDigester {
  private readonly worker: Worker;
  private readonly replies: { resolve: (reply: unknown) => void; reject: (error: Error) => void }[] = [];
  private failure: Error | undefined;
  private bytes = 0;

  constructor(algorithms: Algorithms = {}) {
    const names = [...(algorithms.md5 === false ? [] : ["md5"]), ...(algorithms.sha256 === false ? [] : ["sha256"])];
    this.worker = new Worker(HASHING_THREAD, { eval: true, workerData: names });
    this.worker.on("message", (reply: unknown) => this.replies.shift()?.resolve(reply));
    this.worker.on("error", (error) => this.fail(new OperationError(`the checksum thread failed: ${error.message}`)));
    this.worker.on("exit", (code) => this.fail(new OperationError(`the checksum thread stopped (exit code ${code})`)));
  }

  /** Bytes handed over so far. */
  get size(): number {
    return this.bytes;
  }

  /** Throws at once for memory that is not shared: the worker could not read it. */
  update(chunk: Buffer): Promise<void> {
    if (!(chunk.buffer instanceof SharedArrayBuffer)) throw new TypeError("ThreadedDigester reads chunks in shared memory only");
    this.bytes += chunk.length;
    return this.ask(chunk).then(() => undefined);
  }

  /** Call once, after the last update. */
  async digests(): Promise<Digests> {
    const hashed = (await this.ask(null)) as { size: number; md5?: string; sha256?: string };
    return { md5: hashed.md5 ?? "", sha256: hashed.sha256 ?? "", size: hashed.size };
  }

  async close(): Promise<void> {
    await this.worker.terminate();
  }

  private ask(message: Uint8Array | null): Promise<unknown> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.replies.push({ resolve, reject });
      this.worker.postMessage(message);
    });
  }

  private fail(error: OperationError): void {
    this.failure ??= error;
    for (const reply of this.replies.splice(0)) reply.reject(this.failure);
  }
}
