import type { Sql } from '../db/client.ts';
import { isConnectionError } from '../db/client.ts';

// Riding out a lost control database (restart, failover, network): a statement that failed
// because the connection did is retried with backoff until it goes through or the caller's
// signal ends the wait (shutdown, the run's deadline, a lost lease). Only statements that are
// safe to repeat go through here: a retried checkpoint recognises that an earlier attempt whose
// answer was lost did commit (checkpoint.ts).

export interface WaitOptions {
  signal?: AbortSignal;
  /** Called when the database is found away (attempt 1) and on each later failure. */
  onWait?: (e: unknown, attempt: number) => void;
  /** Called once it answers again after having been away. */
  onBack?: (attempts: number) => void;
  /** Backoff bounds in ms (default 100 ms doubling to 5 s, with jitter). */
  minDelayMs?: number;
  maxDelayMs?: number;
}

export class DatabaseWaitAborted extends Error {}

/** Runs fn, retrying it while the control database cannot be reached. Other errors are thrown. */
export async function whileDatabaseDown<T>(fn: () => Promise<T>, o: WaitOptions = {}): Promise<T> {
  const min = o.minDelayMs ?? 100;
  const max = o.maxDelayMs ?? 5000;
  for (let attempt = 1; ; attempt++) {
    try {
      const r = await fn();
      if (attempt > 1) o.onBack?.(attempt - 1);
      return r;
    } catch (e) {
      if (!isConnectionError(e)) throw e;
      if (o.signal?.aborted) throw o.signal.reason ?? new DatabaseWaitAborted('stopped while waiting for the control database');
      o.onWait?.(e, attempt);
      const delay = Math.min(max, min * 2 ** Math.min(attempt - 1, 16)) * (0.5 + Math.random() / 2);
      await sleep(delay, o.signal);
      if (o.signal?.aborted) throw o.signal.reason ?? new DatabaseWaitAborted('stopped while waiting for the control database');
    }
  }
}

/** Resolves once the control database answers `select 1` (waiting with backoff while it is away). */
export async function waitForDatabase(sql: Sql, o: WaitOptions = {}): Promise<void> {
  await whileDatabaseDown(() => sql`select 1`, o);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
  });
}
