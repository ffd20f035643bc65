/**
 * Downloads an object as parallel ranged GETs and hands the bytes on in order: `concurrency` ranges
 * in flight, each retried on its own, so one slow or broken connection costs one range, not the
 * transfer. Each range is handed on in `sliceSize` pieces, so the stages after it hold slices, not
 * ranges. Memory is about rangeSize × (concurrency + 1).
 */
import { Readable } from "node:stream";
import pRetry, { AbortError } from "p-retry";
import type { ObjectStore } from "../clients/object-store.js";
import { NotFoundError, RemoteError } from "../errors.js";

export interface RangedDownloadOptions {
  readonly size: number;
  readonly rangeSize: number;
  /** The largest piece handed on at once (default: a whole range). */
  readonly sliceSize?: number;
  readonly concurrency: number;
  readonly retries: number;
  readonly onRetry?: (message: string) => void;
}

export function rangedDownload(store: ObjectStore, key: string, options: RangedDownloadOptions): Readable {
  const { size, rangeSize, concurrency } = options;
  const sliceSize = options.sliceSize ?? rangeSize;
  const controller = new AbortController();
  const fetchRange = (start: number): Promise<Buffer> => {
    const end = Math.min(start + rangeSize, size) - 1;
    return pRetry(
      async () => {
        const bytes = await store.getRange(key, start, end, controller.signal);
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
      throw error instanceof AbortError ? error.cause : error;
    });
  };

  async function* ranges(): AsyncGenerator<Buffer> {
    const window: Promise<Buffer>[] = [];
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
        const bytes = await window.shift()!;
        fill();
        for (let offset = 0; offset < bytes.length; offset += sliceSize) yield bytes.subarray(offset, offset + sliceSize);
      }
    } finally {
      controller.abort();
    }
  }
  return Readable.from(ranges(), { objectMode: false, highWaterMark: 1 });
}
