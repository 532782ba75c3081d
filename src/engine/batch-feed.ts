import type { WriteOperation } from '../connectors/types.ts';
import { splitBatches } from './batch.ts';
import type { PlannedOp, PlanPage } from './plan.ts';

// The plan's pending operations as batches for delivery's slots, read a page at a time (keyset on
// seq) with the next page read while this one's batches are being sent: a slot that frees finds
// its next batch ready instead of waiting for a page read (at 100-row batches a page of 400 rows
// took ~5 ms under load, during which no batch could start), and a slot's checkpoint can register
// the batch that takes the slot next (deliver.ts). Between one and two pages are held.

/** A batch of one wire operation, in plan order. */
export interface FeedBatch {
  operation: WriteOperation;
  ops: PlannedOp[];
}

export interface BatchFeedOptions {
  /** Operations per page read. */
  pageSize: number;
  /** Rows per batch at most. */
  batchSize: number;
  /** The sync's mode (which wire operation each planned operation is). */
  mode: string;
  /** Sees every page as it is read, before its batches are handed out (may throw: the takes reject). */
  onPage(page: PlanPage): void;
  /** Whether to read on ahead (false once delivery is stopping). */
  readAhead(): boolean;
}

export class BatchFeed {
  readonly #read: (afterSeq: number, limit: number) => Promise<PlanPage>;
  readonly #o: BatchFeedOptions;
  #batches: FeedBatch[] = [];
  #head = 0;
  /** Rows in the batches not yet taken. */
  #rows = 0;
  #lastSeq = 0;
  /** A short page was read: the plan has nothing after it. */
  #ended = false;
  /** The page read under way (its batches are added as soon as it arrives). */
  #reading: Promise<void> | undefined;
  /** A page read failed (or onPage threw): every take from then on rejects with it. */
  #error: { e: unknown } | undefined;

  /** @param read the pending operations after a seq, at most `limit` of them, in seq order (readPending) */
  constructor(read: (afterSeq: number, limit: number) => Promise<PlanPage>, o: BatchFeedOptions) {
    this.#read = read;
    this.#o = o;
  }

  /**
   * The next batch, waiting for a page when none is read; undefined once the plan is exhausted, or
   * when the next batch is a delete and `deletes` is false (deletes come last in the plan:
   * delivery opens them after its barrier). Rejects with a page read's error.
   */
  async take(deletes: boolean): Promise<FeedBatch | undefined> {
    for (;;) {
      if (this.#error) throw this.#error.e;
      const b = this.takeReady(deletes);
      if (b || this.#head < this.#batches.length || this.#ended) return b;
      this.#pump(true);
      await this.#reading;
    }
  }

  /** The next batch if one is read already (and allowed, as in take); never waits. */
  takeReady(deletes: boolean): FeedBatch | undefined {
    const b = this.#batches[this.#head];
    if (!b || (b.operation === 'delete' && !deletes)) return undefined;
    this.#batches[this.#head++] = undefined as unknown as FeedBatch;
    this.#rows -= b.ops.length;
    if (this.#head === this.#batches.length) {
      this.#batches = [];
      this.#head = 0;
    }
    this.#pump();
    return b;
  }

  /**
   * Starts the next page read when less than a page is left and none is under way; `needed`: a
   * take waits for it (else only while delivery reads ahead).
   */
  #pump(needed = false): void {
    if (this.#reading || this.#ended || this.#error || this.#rows >= this.#o.pageSize || !(needed || this.#o.readAhead())) return;
    this.#reading = this.#read(this.#lastSeq, this.#o.pageSize)
      .then((page) => {
        this.#o.onPage(page);
        const ops = page.ops;
        if (ops.length < this.#o.pageSize) this.#ended = true;
        if (ops.length) {
          this.#lastSeq = ops[ops.length - 1].seq;
          this.#rows += ops.length;
          this.#batches.push(...splitBatches(ops, this.#o.batchSize, this.#o.mode));
        }
      })
      .catch((e: unknown) => {
        this.#error = { e };
      })
      .finally(() => {
        this.#reading = undefined;
        this.#pump();
      });
  }
}
