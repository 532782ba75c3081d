import { ConnectorError } from '../../errors.ts';
import { cancelled } from './read-only.ts';

// Every await on a source database goes through `bounded`: a deadline, and the caller's
// AbortSignal, race the driver's promise. A driver promise that never settles (postgres.js
// after a reset on a reserved connection, mysql2 after `KILL <id>`) therefore cannot hold a run
// or a preview; the caller then destroys the connection instead of talking to it again.

/** Connecting, BEGIN/SET, catalogue look-ups, closing: answered in milliseconds by a live server. */
export const CONTROL_TIMEOUT_MS = 15_000;
/** Added to the statement timeout for awaits that wait on the query itself. */
export const DATA_GRACE_MS = 10_000;
/** How long a best-effort cancel of a server-side query may take before we stop waiting. */
export const CANCEL_TIMEOUT_MS = 3_000;

export class DeadlineExceeded extends Error {
  readonly what: string;
  readonly ms: number;
  constructor(what: string, ms: number) {
    super(`${what}: no answer from the database within ${Math.round(ms / 1000)} s`);
    this.what = what;
    this.ms = ms;
  }
}

/**
 * Awaits `p` for at most `ms` milliseconds. Rejects with DeadlineExceeded after that, or with
 * ConnectorError `cancelled` as soon as `signal` aborts; `p` itself is left to settle (its
 * rejection is handled) and the caller is expected to destroy whatever `p` was waiting on.
 */
export function bounded<T>(p: Promise<T> | PromiseLike<T>, ms: number, what: string, signal?: AbortSignal): Promise<T> {
  const inner = Promise.resolve(p);
  inner.catch(() => {});
  if (signal?.aborted) return Promise.reject(cancelled());
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => finish(() => reject(new DeadlineExceeded(what, ms))), Math.max(1, ms));
    const onAbort = () => finish(() => reject(cancelled()));
    signal?.addEventListener('abort', onAbort, { once: true });
    let settled = false;
    function finish(f: () => void) {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      f();
    }
    inner.then(
      (v) => finish(() => resolve(v)),
      (e) => finish(() => reject(e)),
    );
  });
}

/** The source stopped answering or went away mid-operation: retried by the engine, never fatal. */
export function sourceUnavailable(message: string, cause?: unknown): ConnectorError {
  return new ConnectorError('source_unavailable', message, {
    classification: 'retryable',
    hint: 'The source database closed the connection or stopped answering (restart, failover, network cut, a killed session, or a query that ends its own session). The run will be retried; if it keeps failing, check the database and the network path to it.',
    cause,
  });
}

// Codes (from pgError/mysqlError) that mean the session itself is gone, not that the SQL failed.
const LOST = new Set(['connection_lost', 'connection_error', 'connection_timeout', 'source_unavailable']);

/**
 * Maps a failure during an established session: a lost session becomes `source_unavailable`
 * (retryable); SQL errors, timeouts and cancels keep their own codes.
 */
export function duringSession(e: unknown, translate: (e: unknown) => ConnectorError): ConnectorError {
  if (e instanceof DeadlineExceeded) return sourceUnavailable(`The source database stopped answering (${e.message}).`, e);
  const err = translate(e);
  if (err.code === 'source_unavailable' || !LOST.has(err.code)) return err;
  return sourceUnavailable(`The connection to the source database was lost: ${err.message}`, e);
}
