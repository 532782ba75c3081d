import type { Sql } from '../db/client.ts';

/**
 * NOTIFY channel of resource changes that cached reads depend on (payload: the table's name).
 * Statement-level triggers send it (migration 0013) for every change of a sync and every slug
 * change or deletion of a model or connection, by any instance, the worker or by hand.
 */
export const RESOURCES_CHANNEL = 'backhaul_resources';

export interface ReadCacheOptions {
  /**
   * How long an entry is trusted, ms: the bound on a stale read in another instance when its
   * notification is lost (a dropped LISTEN connection). Default 2,000; 0 turns the cache off.
   */
  ttlMs?: number;
  /**
   * Entries kept at most (oldest evicted first). Default 1,000: a page of 50 syncs and its
   * serialised answer weigh ~60 KB, so the cache stays under ~60 MB whatever callers ask.
   */
  maxEntries?: number;
}

/**
 * The hottest reads of the API (a sync, a page of syncs) answered from memory: an answer costs a
 * database round trip (a loopback TCP exchange and a backend's CPU on the same few cores) that is
 * several times the rest of the request.
 *
 * Consistency:
 * - The same instance: every write request emptied the cache before its answer went out
 *   (`clear`, called by the HTTP layer for every non-GET request), so a client reads its writes.
 * - Another instance: emptied when the NOTIFY arrives (milliseconds); if notifications were
 *   lost, an entry lives at most `ttlMs`. A stale read never leaks into a write: If-Match is
 *   checked against the database.
 * - A read that began before a clear never stores its answer (generation check), so an answer
 *   read before a write commits cannot outlive that write.
 * Entries are only kept while the LISTEN subscription is up (`listen`); without it nothing is cached.
 * Cached values are shared between callers and must not be mutated.
 */
export class ReadCache<V> {
  private readonly entries = new Map<string, { value: V; expires: number }>();
  private generation = 0;
  private listening = false;
  private ttlMs: number;
  private maxEntries: number;

  constructor(opts: ReadCacheOptions = {}) {
    this.ttlMs = opts.ttlMs ?? 2000;
    this.maxEntries = Math.max(1, opts.maxEntries ?? 1000);
  }

  get(key: string): V | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    if (e.expires > Date.now()) return e.value;
    this.entries.delete(key);
    return undefined;
  }

  /** The generation to pass to `set`, taken before the read that fills an entry. */
  mark(): number {
    return this.generation;
  }

  set(key: string, value: V, generation: number): void {
    if (!this.listening || this.ttlMs <= 0 || generation !== this.generation) return;
    // Oldest first: a Map iterates in insertion order.
    if (this.entries.size >= this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
    this.entries.set(key, { value, expires: Date.now() + this.ttlMs });
  }

  clear(): void {
    this.generation++;
    this.entries.clear();
  }

  /**
   * Follows RESOURCES_CHANNEL and only then caches. postgres.js re-subscribes after a lost
   * connection and calls onlisten again: the cache is emptied then, since notifications sent
   * meanwhile were missed. Returns the way to stop.
   */
  async listen(sql: Sql, opts: ReadCacheOptions = {}): Promise<() => Promise<void>> {
    this.ttlMs = opts.ttlMs ?? this.ttlMs;
    this.maxEntries = Math.max(1, opts.maxEntries ?? this.maxEntries);
    const sub = await sql.listen(
      RESOURCES_CHANNEL,
      () => this.clear(),
      () => {
        this.clear();
        this.listening = true;
      },
    );
    return async () => {
      this.listening = false;
      this.clear();
      await sub.unlisten();
    };
  }
}
