/**
 * Content-addressed blobs in the bucket (`blobs/sha256/{hex}`): layers, image configs and OCI
 * manifests, stored once per bucket whatever app uses them. A blob appears under its address only
 * complete and verified: a body whose digest is known up front is checked as it streams and the
 * upload is aborted on a mismatch; one whose digest is learnt while it streams (a layer compressed
 * here) goes to a staging key first and is copied to its address once the digest is known.
 */
import { randomUUID } from "node:crypto";
import { Readable, Transform, type Duplex, type TransformCallback } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ObjectStore, UploadOptions } from "../clients/object-store.js";
import { IntegrityError } from "../errors.js";
import { blobKey, blobUploadKey } from "../domain/keys.js";
import { sha256Digest } from "../domain/oci.js";
import { Digester } from "../transfer/digest.js";

/** Configs and manifests are a few KiB; a "small" blob larger than this is not one. */
export const MAX_DOCUMENT_BLOB_BYTES = 4 * 1024 * 1024;

export interface StoredBlob {
  readonly digest: string;
  readonly size: number;
}

export class BlobStore {
  constructor(
    readonly objects: ObjectStore,
    private readonly upload: Pick<UploadOptions, "partSizeBytes" | "concurrency">,
  ) {}

  url(digest: string): string {
    return this.objects.url(blobKey(digest));
  }

  /** The stored blob's size, or undefined when the bucket does not have it. */
  async size(digest: string): Promise<number | undefined> {
    return (await this.objects.head(blobKey(digest)))?.size;
  }

  /** Stores a small blob (a config or manifest) given whole. */
  async putBytes(bytes: Buffer): Promise<StoredBlob> {
    const digest = sha256Digest(bytes);
    if ((await this.size(digest)) !== bytes.length) await this.objects.upload(blobKey(digest), Readable.from([bytes]), { ...this.upload, expectedBytes: bytes.length });
    return { digest, size: bytes.length };
  }

  /** Reads a small blob whole and checks its digest. */
  async getBytes(digest: string): Promise<Buffer> {
    const stream = await this.objects.getStream(blobKey(digest));
    const parts: Buffer[] = [];
    let length = 0;
    for await (const part of stream as AsyncIterable<Buffer>) {
      length += part.length;
      if (length > MAX_DOCUMENT_BLOB_BYTES) {
        stream.destroy();
        throw new IntegrityError(`${this.url(digest)} is larger than ${MAX_DOCUMENT_BLOB_BYTES} bytes: not an image config or manifest`);
      }
      parts.push(part);
    }
    const bytes = Buffer.concat(parts);
    if (sha256Digest(bytes) !== digest) throw new IntegrityError(`${this.url(digest)} does not match its digest: refusing to use it`);
    return bytes;
  }

  /** Streams a blob whose digest is known, through `stages`; it appears only if the bytes match. */
  async putVerified(digest: string, body: Readable, stages: readonly Duplex[], expectedBytes?: number): Promise<StoredBlob> {
    const check = new DigestCheck(digest, this.url(digest));
    const uploading = this.objects.upload(blobKey(digest), check, { ...this.upload, expectedBytes });
    const [, streamed] = await Promise.allSettled([uploading, pipeline([body, ...stages, check])]);
    await uploading;
    if (streamed.status === "rejected") throw streamed.reason;
    return { digest, size: check.size };
  }

  /**
   * Streams a blob through `stages` (a compressor, say) and learns its digest on the way: to a staging
   * key, then copied to its address unless the bucket has it.
   */
  async putUnaddressed(body: Readable, stages: readonly Duplex[], options: { expectedBytes?: number }): Promise<StoredBlob> {
    const staging = blobUploadKey(randomUUID());
    const digester = new Digester({ md5: false });
    const tap = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        digester.update(chunk);
        callback(null, chunk);
      },
    });
    const uploading = this.objects.upload(staging, tap, { ...this.upload, expectedBytes: options.expectedBytes });
    const [, streamed] = await Promise.allSettled([uploading, pipeline([body, ...stages, tap])]);
    await uploading;
    if (streamed.status === "rejected") throw streamed.reason;
    const { sha256, size } = digester.digests();
    const digest = `sha256:${sha256}`;
    try {
      if ((await this.size(digest)) !== size) await this.objects.copy(staging, blobKey(digest));
    } finally {
      await this.objects.delete(staging).catch(() => undefined);
    }
    return { digest, size };
  }
}

/** Passes bytes through and fails at the end when their digest is not the expected one. */
class DigestCheck extends Transform {
  private readonly digester = new Digester({ md5: false });

  constructor(
    private readonly expected: string,
    private readonly where: string,
  ) {
    super();
  }

  get size(): number {
    return this.digester.size;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.digester.update(chunk);
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    const actual = `sha256:${this.digester.digests().sha256}`;
    callback(actual === this.expected ? null : new IntegrityError(`the bytes for ${this.where} have digest ${actual}: not stored`));
  }
}
