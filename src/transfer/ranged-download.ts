/**
 * Downloads an object as parallel ranged GETs and hands the ranges on in order: `concurrency`
 * ranges in flight, each retried on its own, so one slow or broken connection costs one range, not
 * the transfer. Ranges land in `concurrency + 1` reused buffers (those with the consumer, the others
 * downloading or, when the consumer is the slower side, downloaded and waiting their turn), so
 * memory is about rangeSize × (concurrency + 1) and the downloaded bytes leave no garbage behind.
 */
import pRetry, { AbortError } from "p-retry";
import type { ObjectStore } from "../clients/object-store.js";
import { NotFoundError, RemoteError } from "../errors.js";
import { BufferPool, type PooledChunk } from "./buffer-pool.js";

export interface RangedDownloadOptions {
  readonly size: number;
  readonly rangeSize: number;
  readonly concurrency: number;
  readonly retries: number;
  /** Ranges in SharedArrayBuffer memory, for a consumer that hands them to a worker thread. */
  readonly sharedMemory?: boolean;
  readonly onRetry?: (message: string) => void;
}

/** Yields the object's ranges in order; release each one when done with it, or the download stalls. */
export async function* rangedDownload(store: ObjectStore, key: string, options: RangedDownloadOptions): AsyncGenerator<PooledChunk> {
  const { size, rangeSize, concurrency } = options;
  const controller = new AbortController();
  const pool = new BufferPool(rangeSize, concurrency + 1, { shared: options.sharedMemory });
  const fetchRange = async (start: number): Promise<PooledChunk> => {
    const end = Math.min(start + rangeSize, size) - 1;
    const buffer = await pool.take();
    const data = await pRetry(
      async () => {
        const bytes = await store.getRange(key, start, end, { signal: controller.signal, into: buffer });
        if (bytes.length !== end - start + 1) {
          throw new RemoteError(`short read of ${store.url(key)} bytes ${start}-${end}: got ${bytes.length}`);
        }
        return bytes;
      },
      {
        retries: options.retries,
        minTimeout: 200,
        signal: controller.signal,
        shouldRetry: ({ error }) => !(error instanceof NotFoundError) && !/access denied/.test(error.message),
        onFailedAttempt: ({ error, attemptNumber, retriesLeft }) => {
          if (retriesLeft > 0) options.onRetry?.(`range ${start}-${end} failed (attempt ${attemptNumber}): ${error.message}; retrying`);
        },
      },
    ).catch((error: unknown) => {
      pool.give(buffer);
      throw error instanceof AbortError ? error.cause : error;
    });
    return pool.chunk(buffer, data);
  };

  const window: Promise<PooledChunk>[] = [];
  let next = 0;
  const fill = () => {
    while (window.length < concurrency && next < size) {
      const job = fetchRange(next);
      job.catch(() => undefined); // observed when it reaches the head of the window
      window.push(job);
      next += rangeSize;
    }
  };
  try {
    fill();
    while (window.length > 0) {
      const range = await window.shift()!;
      fill();
      yield range;
    }
  } finally {
    controller.abort();
  }
}
