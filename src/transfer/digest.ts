/** A pass-through that counts bytes and computes MD5 (the Go tool's checksum) and SHA-256 as they flow. */
import { createHash, type Hash } from "node:crypto";
import { Transform, type TransformCallback } from "node:stream";

export interface Digests {
  readonly md5: string;
  readonly sha256: string;
  readonly size: number;
}

export class DigestTap extends Transform {
  private readonly md5: Hash = createHash("md5");
  private readonly sha256: Hash = createHash("sha256");
  private bytes = 0;
  private result: Digests | undefined;

  constructor(private readonly onBytes?: (total: number) => void) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.md5.update(chunk);
    this.sha256.update(chunk);
    this.bytes += chunk.length;
    this.onBytes?.(this.bytes);
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    this.result = { md5: this.md5.digest("hex"), sha256: this.sha256.digest("hex"), size: this.bytes };
    callback();
  }

  /** The digests of everything that passed; only after the input has ended. */
  digests(): Digests {
    if (!this.result) throw new Error("digests read before the stream ended");
    return this.result;
  }
}
