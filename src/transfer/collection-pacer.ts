/**
 * Asks V8 for a full garbage collection after every `intervalBytes` of a stream, through the
 * runtime's `gc` where it is exposed (the single executable runs with --expose-gc; elsewhere
 * `globalThis.gc` is undefined and this does nothing).
 *
 * Why: the export's socket buffers live outside V8's heap. On a push they end up freed only by full
 * collections (forcing young ones freed nothing; most likely they outlive the young generation
 * while compression holds the stream back), and V8 starts a full one by itself only once external
 * memory has grown by 64 MiB. Measured on a 1 GB push with the single executable: 19 full
 * collections, all for external memory, and a peak RSS of ~235 MB; asking every 16 MiB keeps it
 * near 185 MB, for about one CPU-second more.
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
