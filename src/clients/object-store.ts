/** The object store the services use, and its implementation over the AWS SDK. */
import { randomUUID } from "node:crypto";
import { Agent as HttpAgent } from "node:http";
import { Agent as HttpsAgent } from "node:https";
import { Readable } from "node:stream";
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  CopyObjectCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import { NodeHttpHandler } from "@smithy/node-http-handler";
import pRetry from "p-retry";
import type { Logger } from "pino";
import { MAX_DOCUMENT_BYTES } from "../domain/documents.js";
import { ConflictError, IntegrityError, NotFoundError, OperationError, RemoteError, S3dockError } from "../errors.js";
import { BufferPool, handedOver, pooledChunks } from "../transfer/buffer-pool.js";

export interface ObjectInfo {
  readonly key: string;
  readonly size: number;
  readonly etag: string;
  readonly lastModified: Date | undefined;
}

export interface StoredText {
  readonly text: string;
  readonly etag: string;
}

/** Create-only, or replace exactly the version that was read. */
export type WriteCondition = { readonly ifNoneMatch: true } | { readonly ifMatch: string };

export interface UploadOptions {
  /** The smallest part; larger when `expectedBytes` would otherwise need more parts than S3 allows. */
  readonly partSizeBytes: number;
  /** About how large the body will be (for a push, the uncompressed image), when known. */
  readonly expectedBytes?: number;
  readonly concurrency: number;
  /**
   * The body's chunks are fresh buffers handed over to the upload, which frees each one as soon as
   * it is copied into a part (see discard) instead of leaving it for V8's next full collection.
   */
  readonly chunksHandedOver?: boolean;
  readonly onProgress?: (uploadedBytes: number) => void;
}

export interface PendingUpload {
  readonly key: string;
  readonly uploadId: string;
  readonly initiated: Date | undefined;
}

export interface ObjectStore {
  readonly bucket: string;
  /** `s3://bucket/key`, for messages. */
  url(key: string): string;
  head(key: string): Promise<ObjectInfo | undefined>;
  /** A whole document, read again when its body is cut short or stalls; one larger than MAX_DOCUMENT_BYTES is an IntegrityError, not read past that. */
  getText(key: string): Promise<StoredText | undefined>;
  /**
   * Throws ConflictError when the condition does not hold. When the answer is lost (the connection
   * drops after the server applied the write, and the retry then finds the condition broken), the
   * document is read back: finding `text` itself there means the write was ours. Callers make
   * `text` unique (a write id) so that no one else's write can look like theirs.
   */
  putText(key: string, text: string, condition?: WriteCondition): Promise<{ etag: string }>;
  /** Streams a body of unknown length into the key; the object appears whole or not at all. */
  upload(key: string, body: Readable, options: UploadOptions): Promise<{ etag: string }>;
  /** Bytes start…endInclusive, read into `options.into` (it must be large enough); returns the filled part. */
  getRange(key: string, start: number, endInclusive: number, options: RangeOptions): Promise<Buffer>;
  getStream(key: string): Promise<Readable>;
  /** `createOnly`: refuse (ConflictError) when the destination exists, where the server honours it. */
  copy(sourceKey: string, destinationKey: string, options?: { createOnly?: boolean }): Promise<void>;
  delete(key: string): Promise<void>;
  list(prefix: string): AsyncIterable<ObjectInfo>;
  /** The common prefixes one level below `prefix` (delimiter `/`). */
  listPrefixes(prefix: string): Promise<string[]>;
  listPendingUploads(prefix: string): Promise<PendingUpload[]>;
  abortUpload(upload: PendingUpload): Promise<void>;
  /** Whether the server honours If-None-Match / If-Match on PUT; probed once. */
  conditionalWritesHonoured(): Promise<boolean>;
  /** The server's time now, as its last answer's Date header gave it (the local clock until one arrives). */
  serverNow(): Date;
}

export interface RangeOptions {
  readonly into: Buffer;
  readonly signal?: AbortSignal;
}

export interface S3StoreOptions {
  readonly bucket: string;
  readonly region: string;
  readonly endpoint: string | undefined;
  readonly credentials: { readonly accessKeyId: string; readonly secretAccessKey: string } | undefined;
  readonly retryCount: number;
  readonly maxSockets: number;
  /** A connection that sends or receives nothing for this long fails (and the request is retried). */
  readonly idleTimeoutMs: number;
  readonly logger: Logger;
}

/** What the probe found: whether conditional PUTs work, and how this server wants If-Match ETags spelled. */
interface ConditionalSupport {
  readonly honoured: boolean;
  /** RFC 7232 quotes the ETag (AWS, MinIO); Ceph RGW (Pacific) compares If-Match on PUT against the bare digest. */
  readonly quoteEtags: boolean;
}

const bareEtag = (etag: string): string => etag.replace(/^"(.*)"$/, "$1");

/** S3's limit on the parts of one multipart upload. */
const MAX_PARTS = 10_000;
const MiB = 1024 * 1024;

/**
 * The part size for a body of about `expectedBytes`: `minimum`, or the next whole MiB that fits the
 * body in S3's 10,000 parts with 1% to spare (a gzip member of incompressible data is a little
 * larger than its input).
 */
export function partSizeFor(minimum: number, expectedBytes: number | undefined): number {
  if (expectedBytes === undefined) return minimum;
  const needed = Math.ceil((expectedBytes * 1.01) / MAX_PARTS / MiB) * MiB;
  return Math.max(minimum, needed);
}

const TRANSIENT_NETWORK = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "ENOTFOUND", "EAI_AGAIN", "EHOSTUNREACH"]);

/** A body that ended before its Content-Length: the connection broke, the document is not corrupt. */
class ShortBodyError extends Error {
  readonly code = "ECONNRESET";
}

/** A failure while a body was arriving (reset, idle timeout, cut short): worth reading again. */
function brokenTransfer(error: unknown): boolean {
  const name = (error as { name?: string }).name ?? "";
  const code = (error as { code?: string }).code ?? "";
  return error instanceof ShortBodyError || TRANSIENT_NETWORK.has(code) || name === "TimeoutError" || code === "ERR_STREAM_PREMATURE_CLOSE";
}

/**
 * An endpoint whose host starts with the bucket name (`https://bucket.s3.region.wasabisys.com`) is
 * still addressed path-style by the Go tool, so every key there carries a `bucket/` prefix.
 */
export function keyPrefixFor(bucket: string, endpoint: string | undefined): string {
  if (!endpoint) return "";
  try {
    return new URL(endpoint).hostname.startsWith(`${bucket}.`) ? `${bucket}/` : "";
  } catch {
    return "";
  }
}

export class S3ObjectStore implements ObjectStore {
  readonly bucket: string;
  private readonly client: S3Client;
  private readonly prefix: string;
  private readonly logger: Logger;
  private readonly retryCount: number;
  private conditionalProbe: Promise<ConditionalSupport> | undefined;
  /** Server time minus local time, from the Date header of the latest answer. */
  private serverClockOffsetMs = 0;

  constructor(options: S3StoreOptions) {
    this.bucket = options.bucket;
    this.logger = options.logger;
    this.prefix = keyPrefixFor(options.bucket, options.endpoint);
    this.retryCount = options.retryCount;
    const agentOptions = { keepAlive: true, maxSockets: options.maxSockets };
    this.client = new S3Client({
      region: options.region,
      endpoint: options.endpoint,
      forcePathStyle: options.endpoint !== undefined,
      credentials: options.credentials,
      maxAttempts: options.retryCount + 1,
      retryMode: "standard",
      // S3-compatible servers lag behind AWS's newest checksum headers: send and check them only when an API requires it.
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
      requestHandler: new NodeHttpHandler({
        httpAgent: new HttpAgent(agentOptions),
        httpsAgent: new HttpsAgent(agentOptions),
        connectionTimeout: 10_000,
        // An idle timer on the socket, running until the body has arrived: a server that stops
        // sending, before the headers or in the middle of a body, fails the read, which is then
        // retried (the SDK's requestTimeout stops counting once the headers are in).
        socketTimeout: options.idleTimeoutMs,
      }),
    });
    // Every answer carries the server's Date: ages and timestamps come from it, not the local clock.
    this.client.middlewareStack.add(
      (next) => async (args) => {
        const result = await next(args);
        this.noteServerDate((result.response as { headers?: Record<string, string> }).headers?.date);
        return result;
      },
      { step: "deserialize", priority: "low", name: "s3dockServerClock" },
    );
  }

  private noteServerDate(date: string | undefined): void {
    const server = date === undefined ? NaN : Date.parse(date);
    // Date has whole seconds: the middle of the second is the best guess.
    if (!Number.isNaN(server)) this.serverClockOffsetMs = server + 500 - Date.now();
  }

  serverNow(): Date {
    return new Date(Date.now() + this.serverClockOffsetMs);
  }

  /**
   * Runs `read` (one request and its whole body) again when the body breaks off: the SDK retries a
   * request until its headers arrive, but a body that stalls or is cut short fails after that.
   */
  private retryingRead<T>(key: string, read: () => Promise<T>): Promise<T> {
    return pRetry(read, {
      retries: this.retryCount,
      minTimeout: 200,
      shouldRetry: ({ error }) => brokenTransfer(error),
      onFailedAttempt: ({ error, attemptNumber, retriesLeft }) => {
        if (retriesLeft > 0 && brokenTransfer(error)) this.logger.warn(`reading ${this.url(key)} broke off (attempt ${attemptNumber}: ${error.message}); retrying`);
      },
    });
  }

  url(key: string): string {
    return `s3://${this.bucket}/${key}`;
  }

  private fullKey(key: string): string {
    return this.prefix + key;
  }

  /** Turns SDK and network failures into one line that says what to do. */
  private failure(error: unknown, action: string, key?: string): S3dockError {
    if (error instanceof S3dockError) return error;
    const where = key === undefined ? `s3://${this.bucket}` : this.url(key);
    const name = (error as { name?: string }).name ?? "";
    const code = (error as { code?: string }).code ?? "";
    const status = error instanceof S3ServiceException ? error.$metadata.httpStatusCode : undefined;
    if (name === "NoSuchBucket") {
      return new NotFoundError(`bucket ${this.bucket} does not exist: create it, or choose another with --bucket or the profile`, { cause: error });
    }
    if (name === "AccessDenied" || name === "InvalidAccessKeyId" || name === "SignatureDoesNotMatch" || status === 403) {
      return new RemoteError(`access denied: cannot ${action} ${where} (${name || status}); check the profile's credentials and the bucket policy`, { cause: error });
    }
    if (name === "CredentialsProviderError") {
      return new RemoteError(
        `no S3 credentials found to ${action} ${where}: set access_key/secret_key in the profile, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or AWS_PROFILE`,
        { cause: error },
      );
    }
    if (TRANSIENT_NETWORK.has(code) || TRANSIENT_NETWORK.has(name) || name === "TimeoutError" || error instanceof ShortBodyError) {
      return new RemoteError(`cannot reach the S3 endpoint to ${action} ${where} (${code || name}); check the endpoint and the network`, { cause: error });
    }
    const message = (error as Error).message ?? String(error);
    return new RemoteError(`cannot ${action} ${where}: ${name ? `${name}: ` : ""}${message}`, { cause: error });
  }

  private static isMissing(error: unknown): boolean {
    const name = (error as { name?: string }).name;
    return name === "NoSuchKey" || name === "NotFound" || (error instanceof S3ServiceException && error.$metadata.httpStatusCode === 404 && name !== "NoSuchBucket");
  }

  private static isPreconditionFailed(error: unknown): boolean {
    const name = (error as { name?: string }).name;
    const status = error instanceof S3ServiceException ? error.$metadata.httpStatusCode : undefined;
    return name === "PreconditionFailed" || status === 412 || name === "ConditionalRequestConflict" || status === 409;
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.fullKey(key) }));
      return { key, size: out.ContentLength ?? 0, etag: out.ETag ?? "", lastModified: out.LastModified };
    } catch (error) {
      if (S3ObjectStore.isMissing(error)) return undefined;
      throw this.failure(error, "read", key);
    }
  }

  async getText(key: string): Promise<StoredText | undefined> {
    const tooLarge = (size: string) =>
      new IntegrityError(`${this.url(key)} is ${size} bytes, more than any s3dock document (${MAX_DOCUMENT_BYTES / 1024} KiB): refusing to read it`);
    try {
      return await this.retryingRead(key, async () => {
        const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.fullKey(key) }));
        const body = out.Body as Readable;
        // The declared length first, then the bytes themselves: a body without one is cut off at the limit.
        if ((out.ContentLength ?? 0) > MAX_DOCUMENT_BYTES) {
          body.destroy();
          throw tooLarge(String(out.ContentLength));
        }
        const parts: Buffer[] = [];
        let size = 0;
        for await (const part of body) {
          parts.push(part as Buffer);
          size += (part as Buffer).length;
          if (size > MAX_DOCUMENT_BYTES) {
            body.destroy();
            throw tooLarge(`over ${MAX_DOCUMENT_BYTES}`);
          }
        }
        if (out.ContentLength !== undefined && size !== out.ContentLength) {
          throw new ShortBodyError(`the body ended after ${size} of ${out.ContentLength} bytes`);
        }
        return { text: Buffer.concat(parts).toString("utf8"), etag: out.ETag ?? "" };
      });
    } catch (error) {
      if (S3ObjectStore.isMissing(error)) return undefined;
      throw this.failure(error, "read", key);
    }
  }

  async putText(key: string, text: string, condition?: WriteCondition): Promise<{ etag: string }> {
    try {
      return await this.putTextOnce(key, text, condition);
    } catch (error) {
      // A lost answer: the retry found the condition broken, or every attempt failed in transit.
      if (!(error instanceof ConflictError) && !(error instanceof RemoteError)) throw error;
      const stored = await this.getText(key).catch(() => undefined);
      if (stored?.text !== text) throw error;
      this.logger.debug(`${this.url(key)}: the answer to our write was lost; reading it back found our own write`);
      return { etag: stored.etag };
    }
  }

  private async putTextOnce(key: string, text: string, condition?: WriteCondition): Promise<{ etag: string }> {
    const support = condition ? await this.conditionalSupport() : undefined;
    if (condition && !support!.honoured) return this.putTextCheckedByReadBack(key, text, condition);
    const ifMatch = condition && "ifMatch" in condition ? (support!.quoteEtags ? `"${bareEtag(condition.ifMatch)}"` : bareEtag(condition.ifMatch)) : undefined;
    try {
      const out = await this.client.send(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: this.fullKey(key),
          Body: text,
          ContentType: "application/json",
          IfNoneMatch: condition && "ifNoneMatch" in condition ? "*" : undefined,
          IfMatch: ifMatch,
        }),
      );
      return { etag: out.ETag ?? "" };
    } catch (error) {
      if (condition && S3ObjectStore.isPreconditionFailed(error)) {
        throw new ConflictError(`${this.url(key)} was changed by someone else (${"ifNoneMatch" in condition ? "it already exists" : "it is no longer the version read"})`);
      }
      throw this.failure(error, "write", key);
    }
  }

  /** For servers that ignore conditional headers: check, write, then read back to see whose write stands. */
  private async putTextCheckedByReadBack(key: string, text: string, condition: WriteCondition): Promise<{ etag: string }> {
    const current = await this.head(key);
    const expected = "ifNoneMatch" in condition ? undefined : bareEtag(condition.ifMatch);
    if ((current ? bareEtag(current.etag) : undefined) !== expected) {
      throw new ConflictError(`${this.url(key)} was changed by someone else (checked by read-back: this server ignores conditional writes)`);
    }
    await this.putTextUnconditional(key, text);
    const stored = await this.getText(key);
    if (stored?.text !== text) {
      throw new ConflictError(`${this.url(key)} was changed by someone else while writing (checked by read-back)`);
    }
    return { etag: stored.etag };
  }

  private async putTextUnconditional(key: string, text: string): Promise<void> {
    try {
      await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: this.fullKey(key), Body: text, ContentType: "application/json" }));
    } catch (error) {
      throw this.failure(error, "write", key);
    }
  }

  async conditionalWritesHonoured(): Promise<boolean> {
    return (await this.conditionalSupport()).honoured;
  }

  private conditionalSupport(): Promise<ConditionalSupport> {
    this.conditionalProbe ??= this.probeConditionalWrites();
    return this.conditionalProbe;
  }

  /**
   * Create-only must be refused when the key exists, If-Match must be refused for a wrong ETag and
   * accepted for the right one (quoted, or bare for servers that compare the digest). Anything
   * else means the server does not honour conditional writes for our purposes.
   */
  private async probeConditionalWrites(): Promise<ConditionalSupport> {
    const key = this.fullKey(`.s3dock/probe/${randomUUID()}`);
    const put = (condition: { IfNoneMatch?: string; IfMatch?: string }) =>
      this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: "probe", ...condition }));
    /** True when the server refused the write with 412/409. */
    const refused = async (condition: { IfNoneMatch?: string; IfMatch?: string }): Promise<boolean> => {
      try {
        await put(condition);
        return false;
      } catch (error) {
        if (!S3ObjectStore.isPreconditionFailed(error)) throw this.failure(error, "write", key);
        return true;
      }
    };
    let etag: string;
    try {
      etag = bareEtag((await put({ IfNoneMatch: "*" })).ETag ?? "");
    } catch (error) {
      throw this.failure(error, "write", key);
    }
    let support: ConditionalSupport = { honoured: false, quoteEtags: true };
    try {
      if ((await refused({ IfNoneMatch: "*" })) && (await refused({ IfMatch: '"00000000000000000000000000000000"' }))) {
        if (!(await refused({ IfMatch: `"${etag}"` }))) support = { honoured: true, quoteEtags: true };
        else if (!(await refused({ IfMatch: etag }))) support = { honoured: true, quoteEtags: false };
      }
    } finally {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key })).catch(() => undefined);
    }
    this.logger.debug(
      support.honoured
        ? `the S3 server honours conditional writes${support.quoteEtags ? "" : " (If-Match with bare ETags)"}`
        : "the S3 server ignores conditional writes: falling back to checked read-back",
    );
    return support;
  }

  /**
   * A multipart upload fed from `concurrency + 1` reused part buffers: one filling while the others
   * are in flight. A body that fits one part is a single PUT. Any failure aborts the upload, so
   * nothing half-written is left behind as an object.
   */
  async upload(key: string, body: Readable, options: UploadOptions): Promise<{ etag: string }> {
    const Key = this.fullKey(key);
    const partSize = partSizeFor(options.partSizeBytes, options.expectedBytes);
    const parts = pooledChunks(body, new BufferPool(partSize, options.concurrency + 1), { chunksHandedOver: options.chunksHandedOver });
    let uploaded = 0;
    try {
      const first = (await parts.next()).value!;
      const second = await parts.next();
      if (second.done) {
        const out = await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key, Body: first.data, ContentLength: first.data.length }));
        options.onProgress?.(first.data.length);
        first.release();
        return { etag: out.ETag ?? "" };
      }
      const { UploadId } = await this.client.send(new CreateMultipartUploadCommand({ Bucket: this.bucket, Key }));
      const failed = new AbortController();
      const completed: { PartNumber: number; ETag: string }[] = [];
      const waiting = [first, second.value];
      let partNumber = 0;
      const uploadParts = async (): Promise<void> => {
        while (!failed.signal.aborted) {
          const part = waiting.shift() ?? (await parts.next()).value;
          if (!part) return;
          const PartNumber = ++partNumber;
          try {
            if (PartNumber > MAX_PARTS) {
              throw new OperationError(`${this.url(key)} needs more than ${MAX_PARTS} parts of ${partSize} bytes: raise transfer.part_size_mb`);
            }
            const out = await this.client.send(
              new UploadPartCommand({ Bucket: this.bucket, Key, UploadId, PartNumber, Body: part.data, ContentLength: part.data.length }),
              { abortSignal: failed.signal },
            );
            completed.push({ PartNumber, ETag: out.ETag ?? "" });
            uploaded += part.data.length;
            options.onProgress?.(uploaded);
          } finally {
            part.release();
          }
        }
      };
      // The first failure stops the others (their aborted requests are its echo, not the cause).
      let cause: { error: unknown } | undefined;
      await Promise.all(
        Array.from({ length: options.concurrency }, () =>
          uploadParts().catch((error: unknown) => {
            cause ??= { error };
            failed.abort();
          }),
        ),
      );
      if (cause) {
        await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key, UploadId })).catch(() => undefined);
        throw cause.error;
      }
      completed.sort((a, b) => a.PartNumber - b.PartNumber);
      const out = await this.client.send(
        new CompleteMultipartUploadCommand({ Bucket: this.bucket, Key, UploadId, MultipartUpload: { Parts: completed } }),
      );
      // Ceph RGW answers CompleteMultipartUpload with an empty ETag: ask the object for it instead.
      return { etag: out.ETag || ((await this.head(key))?.etag ?? "") };
    } catch (error) {
      // Stops reading the body once the generator next yields; the caller tears the body down.
      parts.return(undefined).catch(() => undefined);
      throw this.failure(error, "upload", key);
    }
  }

  async getRange(key: string, start: number, endInclusive: number, options: RangeOptions): Promise<Buffer> {
    // Straight into the caller's buffer: collecting and concatenating would hold each range twice or more.
    const length = endInclusive - start + 1;
    const bytes = options.into.subarray(0, length);
    if (bytes.length < length) throw new RangeError(`a buffer of ${bytes.length} bytes cannot hold bytes ${start}-${endInclusive}`);
    try {
      const out = await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: this.fullKey(key), Range: `bytes=${start}-${endInclusive}` }),
        { abortSignal: options.signal },
      );
      let filled = 0;
      // The body's reads are its own buffers: each is freed once copied, not left to pile up for the collector.
      for await (const chunk of handedOver(out.Body as Readable)) {
        if (filled + chunk.length > bytes.length) throw new RemoteError(`${this.url(key)}: the server sent more than bytes ${start}-${endInclusive}`);
        filled += chunk.copy(bytes, filled);
      }
      return bytes.subarray(0, filled);
    } catch (error) {
      if (S3ObjectStore.isMissing(error)) throw new NotFoundError(`${this.url(key)} does not exist`);
      throw this.failure(error, "download", key);
    }
  }

  /**
   * The whole object as a stream. A body that breaks off is picked up where it stopped with a
   * ranged GET of the same version (If-Match on its ETag), up to the retry count.
   */
  async getStream(key: string): Promise<Readable> {
    const request = async (start: number, etag: string | undefined) => {
      try {
        return await this.client.send(
          new GetObjectCommand({ Bucket: this.bucket, Key: this.fullKey(key), Range: start > 0 ? `bytes=${start}-` : undefined, IfMatch: etag }),
        );
      } catch (error) {
        if (S3ObjectStore.isMissing(error)) throw new NotFoundError(`${this.url(key)} does not exist`);
        throw this.failure(error, "download", key);
      }
    };
    const first = await request(0, undefined);
    const etag = first.ETag;
    const retryingBody = async function* (this: S3ObjectStore): AsyncGenerator<Buffer> {
      let received = 0;
      let body = first.Body as Readable;
      for (let attempt = 1; ; attempt++) {
        try {
          for await (const chunk of body) {
            received += (chunk as Buffer).length;
            yield chunk as Buffer;
          }
          return;
        } catch (error) {
          if (!brokenTransfer(error) || attempt > this.retryCount) throw this.failure(error, "download", key);
          this.logger.warn(`reading ${this.url(key)} broke off after ${received} bytes (${(error as Error).message}); resuming`);
          body = (await request(received, etag)).Body as Readable;
        }
      }
    };
    return Readable.from(retryingBody.call(this), { objectMode: false });
  }

  async copy(sourceKey: string, destinationKey: string, options: { createOnly?: boolean } = {}): Promise<void> {
    try {
      await this.client.send(
        new CopyObjectCommand({
          Bucket: this.bucket,
          Key: this.fullKey(destinationKey),
          CopySource: encodeURI(`${this.bucket}/${this.fullKey(sourceKey)}`),
          IfNoneMatch: options.createOnly ? "*" : undefined,
        }),
      );
    } catch (error) {
      if (options.createOnly && S3ObjectStore.isPreconditionFailed(error)) throw new ConflictError(`${this.url(destinationKey)} already exists`);
      if (S3ObjectStore.isMissing(error)) throw new NotFoundError(`${this.url(sourceKey)} does not exist`);
      throw this.failure(error, "copy", sourceKey);
    }
  }

  async delete(key: string): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.fullKey(key) }));
    } catch (error) {
      throw this.failure(error, "delete", key);
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    let token: string | undefined;
    do {
      let page;
      try {
        page = await this.client.send(
          new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.fullKey(prefix), ContinuationToken: token }),
        );
      } catch (error) {
        throw this.failure(error, "list", prefix);
      }
      for (const object of page.Contents ?? []) {
        yield {
          key: object.Key!.slice(this.prefix.length),
          size: object.Size ?? 0,
          etag: object.ETag ?? "",
          lastModified: object.LastModified,
        };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  async listPrefixes(prefix: string): Promise<string[]> {
    const prefixes: string[] = [];
    let token: string | undefined;
    do {
      let page;
      try {
        page = await this.client.send(
          new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.fullKey(prefix), Delimiter: "/", ContinuationToken: token }),
        );
      } catch (error) {
        throw this.failure(error, "list", prefix);
      }
      for (const common of page.CommonPrefixes ?? []) prefixes.push(common.Prefix!.slice(this.prefix.length));
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return prefixes;
  }

  async listPendingUploads(prefix: string): Promise<PendingUpload[]> {
    const uploads: PendingUpload[] = [];
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    for (;;) {
      let page;
      try {
        page = await this.client.send(
          new ListMultipartUploadsCommand({ Bucket: this.bucket, Prefix: this.fullKey(prefix), KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker }),
        );
      } catch (error) {
        throw this.failure(error, "list uploads under", prefix);
      }
      for (const upload of page.Uploads ?? []) {
        uploads.push({ key: upload.Key!.slice(this.prefix.length), uploadId: upload.UploadId!, initiated: upload.Initiated });
      }
      if (!page.IsTruncated) return uploads;
      keyMarker = page.NextKeyMarker;
      uploadIdMarker = page.NextUploadIdMarker;
    }
  }

  async abortUpload(upload: PendingUpload): Promise<void> {
    try {
      await this.client.send(
        new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: this.fullKey(upload.key), UploadId: upload.uploadId }),
      );
    } catch (error) {
      if (S3ObjectStore.isMissing(error)) return;
      throw this.failure(error, "abort the upload of", upload.key);
    }
  }
}
