/**
 * Passes chunks through, failing as soon as more than `limit` bytes have passed: a decompressor's
 * output is stopped the moment it outgrows what the archive can be, however small the input was.
 */
export async function* limitBytes(source: AsyncIterable<Buffer>, limit: number, exceeded: () => Error): AsyncGenerator<Buffer> {
  let passed = 0;
  for await (const chunk of source) {
    passed += chunk.length;
    if (passed > limit) throw exceeded();
    yield chunk;
  }
}
