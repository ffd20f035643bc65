/** Build facts, injected by scripts/build.mjs; a run from source says "dev". */
declare const __S3DOCK_VERSION__: string | undefined;
declare const __S3DOCK_COMMIT__: string | undefined;
declare const __S3DOCK_BUILD_DATE__: string | undefined;

export const TOOL_VERSION = {
  version: typeof __S3DOCK_VERSION__ === "string" ? __S3DOCK_VERSION__ : "dev",
  commit: typeof __S3DOCK_COMMIT__ === "string" ? __S3DOCK_COMMIT__ : "unknown",
  date: typeof __S3DOCK_BUILD_DATE__ === "string" ? __S3DOCK_BUILD_DATE__ : "unknown",
};
