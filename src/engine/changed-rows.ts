import type { Row } from '../connectors/types.ts';

/**
 * The fetch of changed rows by key in an incremental run (query.ts): batches of keys are pushed,
 * their rows fetched from the source and handed to `stage`, in order. A batch's fetch is sent once
 * the previous batch's fetch returned and the batch before that was staged, so that the source
 * reads the next batch while this process maps and stages one, and at most two batches of rows
 * are held. Batches may be pushed while the key scan still runs (a FingerprintSession with
 * `fetchesDuringScan`): push never waits; `room` does, for a caller that must not run ahead.
 * After a failure nothing more is fetched or staged, and `end` rejects with the first failure.
 */
export class ChangedRows {
  readonly #fetch: (keys: string[]) => Promise<Row[]>;
  readonly #stage: (rows: Row[], wanted: Set<string>) => Promise<void>;
  /** Settles when the last pushed batch's fetch did (never rejects). */
  #fetched: Promise<void> = Promise.resolve();
  /** Settles when the last pushed batch was staged (never rejects). */
  #staged: Promise<void> = Promise.resolve();
  /** Settles when the batch before the last was staged (never rejects). */
  #stagedBefore: Promise<void> = Promise.resolve();
  #failure: { error: unknown } | undefined;
  /** Keys pushed (a key pushed in two batches counts twice). */
  pushed = 0;

  constructor(fetch: (keys: string[]) => Promise<Row[]>, stage: (rows: Row[], wanted: Set<string>) => Promise<void>) {
    this.#fetch = fetch;
    this.#stage = stage;
  }

  /** Queues the rows of these keys (duplicates within the batch are read once). */
  push(keys: string[]): void {
    if (this.#failure || !keys.length) return;
    this.pushed += keys.length;
    const wanted = new Set(keys);
    const rows = Promise.all([this.#fetched, this.#stagedBefore]).then(() => (this.#failure ? [] : this.#fetch([...wanted])));
    // A failed fetch stops the next one at once (not only once its batch's turn to stage comes).
    rows.catch((error: unknown) => {
      this.#failure ??= { error };
    });
    this.#fetched = rows.then(
      () => {},
      () => {},
    );
    this.#stagedBefore = this.#staged;
    this.#staged = this.#staged
      .then(async () => {
        const fetched = await rows;
        if (!this.#failure) await this.#stage(fetched, wanted);
      })
      .catch((error: unknown) => {
        this.#failure ??= { error };
      });
  }

  /** Fetches and stages nothing more (what is in flight settles; `end` then rejects). */
  cancel(): void {
    this.#failure ??= { error: new Error('the read of changed rows was abandoned') };
  }

  /** The first failure, thrown (for a caller that checks between pushes). */
  check(): void {
    if (this.#failure) throw this.#failure.error;
  }

  /** Waits until at most one pushed batch is not staged yet. */
  async room(): Promise<void> {
    await this.#stagedBefore;
    this.check();
  }

  /** Waits for every pushed batch; rejects with the first failure. */
  async end(): Promise<void> {
    await this.#staged;
    this.check();
  }
}
