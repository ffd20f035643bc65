/**
 * Passes bytes through but keeps the last `holdBytes` until the input has ended and `release`
 * approves. A consumer that needs the end of the stream to finish (docker load needs the tar's end)
 * therefore cannot complete on bytes that fail verification: `release` throwing destroys the stream.
 */
import { Transform, type TransformCallback } from "node:stream";

export class HoldBack extends Transform {
  private held: Buffer = Buffer.alloc(0);

  constructor(
    private readonly holdBytes: number,
    private readonly release: () => Promise<void> | void,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    const joined = this.held.length === 0 ? chunk : Buffer.concat([this.held, chunk]);
    const passable = joined.length - this.holdBytes;
    if (passable > 0) {
      this.push(joined.subarray(0, passable));
      this.held = Buffer.from(joined.subarray(passable));
    } else {
      this.held = joined;
    }
    callback();
  }

  override _flush(callback: TransformCallback): void {
    Promise.resolve()
      .then(() => this.release())
      .then(() => callback(null, this.held), callback);
  }
}
