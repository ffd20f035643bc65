/**
 * A pass-through that counts bytes and computes MD5 (the Go tool's checksum) and SHA-256 as they
 * flow. Each digest can be switched off where nobody reads it: hashing costs main-thread CPU.
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

export class DigestTap extends Transform {
  private readonly md5: Hash | undefined;
  private readonly sha256: Hash | undefined;
  private bytes = 0;
  private result: Digests | undefined;

  constructor(
    private readonly onBytes?: (total: number) => void,
    algorithms: { readonly md5?: boolean; readonly sha256?: boolean } = {},
  ) {
    super();
    this.md5 = algorithms.md5 === false ? undefined : createHash("md5");
    this.sha256 = algorithms.sha256 === false ? undefined : createHash("sha256");
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.md5?.update(chunk);
    this.sha256?.update(chunk);
    this.bytes += chunk.length;
    this.onBytes?.(this.bytes);
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    this.result = { md5: this.md5?.digest("hex") ?? "", sha256: this.sha256?.digest("hex") ?? "", size: this.bytes };
    callback();
  }

  /** The digests of everything that passed; only after the input has ended. */
  digests(): Digests {
    if (!this.result) throw new Error("digests read before the stream ended");
    return this.result;
  }
}
