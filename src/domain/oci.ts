/**
 * The OCI image format as s3dock stores it in the `layers` format: an image is its config blob, its
 * layer blobs (gzip) and an OCI manifest naming them, each content-addressed. Pure: digests, chain
 * IDs and the documents, no I/O.
 */
import { createHash } from "node:crypto";
import { z } from "zod";

export const MEDIA_TYPES = {
  manifest: "application/vnd.oci.image.manifest.v1+json",
  index: "application/vnd.oci.image.index.v1+json",
  config: "application/vnd.oci.image.config.v1+json",
  layerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  layerTar: "application/vnd.oci.image.layer.v1.tar",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  dockerConfig: "application/vnd.docker.container.image.v1+json",
  dockerLayerGzip: "application/vnd.docker.image.rootfs.diff.tar.gzip",
} as const;

const digest = z.string().regex(/^sha256:[0-9a-f]{64}$/, "not a sha256 digest");

export const descriptorSchema = z.looseObject({
  mediaType: z.string(),
  digest,
  size: z.number().int().nonnegative(),
});
export type Descriptor = z.infer<typeof descriptorSchema>;

export const manifestSchema = z.looseObject({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  config: descriptorSchema,
  layers: z.array(descriptorSchema),
});
export type Manifest = z.infer<typeof manifestSchema>;

export const imageConfigSchema = z.looseObject({
  created: z.string().optional(),
  architecture: z.string().optional(),
  os: z.string().optional(),
  rootfs: z.looseObject({ type: z.string(), diff_ids: z.array(digest) }),
});
export type ImageConfig = z.infer<typeof imageConfigSchema>;

/** `layers/sha256/{diffId}.json`: which blob holds the layer with that diff ID. */
export const layerDocumentSchema = z.looseObject({
  diff_id: digest,
  blob: descriptorSchema,
  /**
   * The uncompressed tar's length: a layer in a Docker 20.10 export is recognised by it before it is
   * read. Unknown for a gzip layer stored as the containerd store exported it.
   */
  uncompressed_size: z.number().int().nonnegative().optional(),
});
export type LayerDocument = z.infer<typeof layerDocumentSchema>;

export const sha256Digest = (bytes: Buffer | string): string => `sha256:${createHash("sha256").update(bytes).digest("hex")}`;

/** ChainID(1) = DiffID(1); ChainID(n) = sha256(ChainID(n-1) + " " + DiffID(n)): how engines name a stack of layers. */
export function chainIds(diffIds: readonly string[]): string[] {
  const chains: string[] = [];
  for (const diffId of diffIds) chains.push(chains.length === 0 ? diffId : sha256Digest(`${chains.at(-1)!} ${diffId}`));
  return chains;
}

/** The manifest s3dock writes, its JSON exactly as stored (the digest is over these bytes). */
export function manifestJson(config: Descriptor, layers: readonly Descriptor[]): string {
  const manifest: Manifest = { schemaVersion: 2, mediaType: MEDIA_TYPES.manifest, config, layers: [...layers] };
  return JSON.stringify(manifest);
}
