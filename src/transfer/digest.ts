/**
 * Byte counts, MD5 (the Go tool's checksum) and SHA-256, as a plain accumulator and as a
 * pass-through stage. Each digest can be switched off where nobody reads it: hashing costs main-thread CPU.
 */
import { createHash, type Hash } from "node:crypto";
import { Transform, type TransformCallback } from "node:stream";

export interface Digests {
  /** Empty when not computed. */
  readonly md5: string;
  /** Empty when not computed. */
  readonly sha256: string;
  readonly size: number;
}

/** MD5 and/or SHA-256 and a byte count over whatever is fed to it. */
export class Digester {
  private readonly md5: Hash | undefined;
  private readonly sha256: Hash | undefined;
  private bytes = 0;

  constructor(algorithms: { readonly md5?: boolean; readonly sha256?: boolean } = {}) {
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
    algorithms: { readonly md5?: boolean; readonly sha256?: boolean } = {},
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
