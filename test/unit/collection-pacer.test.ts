import { describe, expect, it, vi } from "vitest";
import { collectionPacer } from "../../src/transfer/collection-pacer.js";

describe("collectionPacer", () => {
  it("asks for one asynchronous full collection per interval of bytes, however the bytes arrive", () => {
    const collect = vi.fn();
    const progress = collectionPacer(100, collect);
    for (const total of [10, 50, 99]) progress(total);
    expect(collect).not.toHaveBeenCalled();
    progress(100);
    expect(collect).toHaveBeenCalledTimes(1);
    expect(collect).toHaveBeenCalledWith({ type: "major", execution: "async" });
    progress(150);
    progress(199);
    expect(collect).toHaveBeenCalledTimes(1);
    progress(200);
    expect(collect).toHaveBeenCalledTimes(2);
    // One large step counts once, and the next interval starts from where it landed.
    progress(1000);
    expect(collect).toHaveBeenCalledTimes(3);
    progress(1099);
    expect(collect).toHaveBeenCalledTimes(3);
    progress(1100);
    expect(collect).toHaveBeenCalledTimes(4);
  });

  it("does nothing where the runtime does not expose gc", () => {
    const progress = collectionPacer(1, undefined);
    expect(() => progress(10)).not.toThrow();
  });
});
