/**
 * An incremental run's key-scan chunks while the snapshot's fingerprint index loads (query.ts):
 * held, oldest first, up to `maxBytes`; past that the scan waits for the index. Every chunk
 * offered comes back exactly once, in order.
 */
export class ScanQueue {
  #chunks: Buffer[] = [];
  #bytes = 0;
  readonly maxBytes: number;

  /** @param maxBytes bytes held before the scan must wait (at least one chunk is always held). */
  constructor(maxBytes: number) {
    this.maxBytes = maxBytes;
  }

  /**
   * Adds a chunk (undefined: the scan ended) and returns the chunks to process now, oldest
   * first: none while `hold` (the index is still loading), the scan goes on and fewer than
   * `maxBytes` are held; otherwise every chunk held, this one included.
   */
  offer(chunk: Buffer | undefined, hold: boolean): Buffer[] {
    if (chunk) {
      this.#chunks.push(chunk);
      this.#bytes += chunk.length;
      if (hold && this.#bytes < this.maxBytes) return [];
    }
    const out = this.#chunks;
    this.#chunks = [];
    this.#bytes = 0;
    return out;
  }

  /** Bytes held. */
  get bytes(): number {
    return this.#bytes;
  }
}
