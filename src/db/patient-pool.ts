import pg from 'pg';
import { isConnectionError } from './client.ts';

// graphile-worker's connection pool (node-postgres). While the control database cannot be
// reached, taking a connection waits — retried with backoff — instead of failing: graphile-worker
// does not await the statements that complete or fail a job, and treats ECONNREFUSED and
// ECONNRESET as fatal, so each failed connect there became an unhandled rejection that ended the
// process. Waiting pauses the worker (job fetches, completions, its LISTEN reconnects) until the
// database is back. stopWaiting() ends the waits (shutdown), after which connect fails as usual.

export interface PatientPool extends pg.Pool {
  /** Pending and future connects fail instead of waiting (call before stopping the runner). */
  stopWaiting(): void;
}

export function patientPool(config: pg.PoolConfig, hooks: { onWait?: (e: unknown, attempt: number) => void; onBack?: () => void } = {}): PatientPool {
  const pool = new pg.Pool(config) as PatientPool;
  const plainConnect = pool.connect.bind(pool) as () => Promise<pg.PoolClient>;
  let waiting = true;
  const stoppers = new Set<() => void>();
  let away = false;

  async function connectPatiently(): Promise<pg.PoolClient> {
    for (let attempt = 1; ; attempt++) {
      try {
        const client = await plainConnect();
        if (away) {
          away = false;
          hooks.onBack?.();
        }
        return client;
      } catch (e) {
        if (!waiting || !isConnectionError(e)) throw e;
        if (!away) hooks.onWait?.(e, attempt);
        away = true;
        // 100 ms doubling to 5 s, with jitter (many workers reconnecting at once spread out).
        const delay = Math.min(5000, 100 * 2 ** Math.min(attempt - 1, 10)) * (0.5 + Math.random() / 2);
        await new Promise<void>((resolve) => {
          const stop = () => {
            clearTimeout(t);
            stoppers.delete(stop);
            resolve();
          };
          const t = setTimeout(stop, delay);
          stoppers.add(stop);
        });
      }
    }
  }

  // Both forms node-postgres offers: a promise, or a callback (graphile-worker's LISTEN client).
  pool.connect = ((cb?: (err: Error | undefined, client: pg.PoolClient | undefined, done: (release?: unknown) => void) => void) => {
    const p = connectPatiently();
    if (!cb) return p;
    p.then(
      (client) => cb(undefined, client, (release?: unknown) => client.release(release as Error | boolean | undefined)),
      (err: Error) => cb(err, undefined, () => {}),
    );
    return undefined;
  }) as PatientPool['connect'];

  pool.stopWaiting = () => {
    waiting = false;
    for (const stop of [...stoppers]) stop();
  };
  return pool;
}
