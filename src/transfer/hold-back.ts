/**
 * Passes bytes through but keeps at least the last `holdBytes` until the input has ended and
 * `release` approves. A consumer that needs the end of the stream to finish (docker load needs the
 * tar's end) therefore cannot complete on bytes that fail verification: `release` throwing destroys
 * the stream. Chunks are held whole, so nothing is copied on the way through.
 */
import { Transform, type TransformCallback } from "node:stream";

export class HoldBack extends Transform {
  private readonly held: Buffer[] = [];
  private heldBytes = 0;

  constructor(
    private readonly holdBytes: number,
    private readonly release: () => Promise<void> | void,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.held.push(chunk);
    this.heldBytes += chunk.length;
    while (this.held.length > 0 && this.heldBytes - this.held[0]!.length >= this.holdBytes) {
      const oldest = this.held.shift()!;
      this.heldBytes -= oldest.length;
      this.push(oldest);
    }
    callback();
  }

  override _flush(callback: TransformCallback): void {
    Promise.resolve()
      .then(() => this.release())
      .then(() => callback(null, Buffer.concat(this.held, this.heldBytes)), callback);
  }
}
