/**
 * Asks V8 for a full garbage collection after every `intervalBytes` of a stream, through the
 * runtime's `gc` where it is exposed (the single executable runs with --expose-gc; elsewhere
 * `globalThis.gc` is undefined and this does nothing).
 *
 * Why: the export's socket buffers live outside V8's heap, and those still referenced at a young
 * collection, as they are while compression holds the stream back, are freed only by a full one.
 * V8 starts that by itself only once external memory has grown by 64 MiB. Measured on a 1 GB push:
 * 19 full collections, each after ~64 MiB of dead buffers had piled up, and a peak RSS of ~220 MB;
 * asking every 16 MiB keeps it near 165 MB, for about one CPU-second more.
 */
export type GarbageCollector = (options: { type: "major"; execution: "async" }) => unknown;

export function collectionPacer(intervalBytes: number, collect: GarbageCollector | undefined): (totalBytes: number) => void {
  let next = intervalBytes;
  return (totalBytes) => {
    if (!collect || totalBytes < next) return;
    next = totalBytes + intervalBytes;
    // Asynchronous: V8 marks incrementally alongside the stream instead of pausing it.
    void collect({ type: "major", execution: "async" });
  };
}
