// Group commit: items submitted while a write is in flight wait for it and then go together in
// the next write, so a burst of small writes (one per batch) costs one statement per burst, not
// one each, and writes never overlap. Used for a run's batch registrations and checkpoints
// (src/engine/deliver.ts) and the row debugger's exchanges (src/notify/debugger.ts).

/**
 * Serialises `write` calls and coalesces the items submitted meanwhile.
 *
 * `write(items)` receives every item queued since the previous write began, in submission order;
 * each item's `add` promise settles with that write (all resolve, or all reject with its error).
 */
export class GroupCommit<T> {
  readonly #write: (items: T[]) => Promise<void>;
  #queue: { item: T; resolve: () => void; reject: (e: unknown) => void }[] = [];
  #draining: Promise<void> | undefined;

  /** @param write writes a group of items (its rejection rejects each of them) */
  constructor(write: (items: T[]) => Promise<void>) {
    this.#write = write;
  }

  /** Queues `item`; resolves once a write that carried it completed. */
  add(item: T): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ item, resolve, reject });
      this.#draining ??= this.#drain();
    });
  }

  /** Resolves when nothing is queued or being written (never rejects). */
  async idle(): Promise<void> {
    while (this.#draining) await this.#draining;
  }

  async #drain(): Promise<void> {
    while (this.#queue.length) {
      const group = this.#queue.splice(0);
      try {
        await this.#write(group.map((g) => g.item));
        for (const g of group) g.resolve();
      } catch (e) {
        for (const g of group) g.reject(e);
      }
    }
    // In the same tick as the last look at the queue: an item added after it starts a new drain.
    this.#draining = undefined;
  }
}
