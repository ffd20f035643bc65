/**
 * Passes pooled chunks through but keeps at least the last `holdBytes` until the input has ended and
 * `release` approves. A consumer that needs the end of the stream to finish (docker load needs the
 * tar's end) therefore cannot complete on bytes that fail verification: when `release` throws, the
 * held chunks are given back unseen and the error goes to the consumer. Chunks are held whole, so
 * nothing is copied on the way through.
 */
import type { PooledChunk } from "./buffer-pool.js";

export async function* holdBack(chunks: AsyncIterable<PooledChunk>, holdBytes: number, release: () => Promise<void> | void): AsyncGenerator<PooledChunk> {
  const held: PooledChunk[] = [];
  let heldBytes = 0;
  try {
    for await (const chunk of chunks) {
      held.push(chunk);
      heldBytes += chunk.data.length;
      while (held.length > 1 && heldBytes - held[0]!.data.length >= holdBytes) {
        const oldest = held.shift()!;
        heldBytes -= oldest.data.length;
        yield oldest;
      }
    }
    await release();
    while (held.length > 0) yield held.shift()!;
  } finally {
    for (const chunk of held.splice(0)) chunk.release();
  }
}
