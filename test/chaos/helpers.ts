import { spawn, type ChildProcess } from 'node:child_process';
import postgres from 'postgres';
import type { TestBackhaul } from '../helpers/backhaul.ts';

// Shared pieces of the reliability suite (`npm run test:chaos`). Sizes come from the
// environment so CI can run the same tests smaller:
//   CHAOS_ROWS (default 100000)  rows of the fault-injection sync
//   CHAOS_KILL_ROWS (3000)       rows of the kill -9 syncs
//   CHAOS_FUZZ_RUNS (3000)       generated API requests
//   CHAOS_LOAD_SECONDS (20)      length of the load test
//   CHAOS_SF_ROWS (100000)       rows of the Salesforce Bulk API 2.0 sync (a multiple of 100)

export const env = (name: string, def: number): number => {
  const v = Number(process.env[name]);
  return Number.isFinite(v) && v > 0 ? v : def;
};

export const engine = { retryBaseMs: 5, retryMaxMs: 50, heartbeatMs: 200 };

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `node src/cli.ts worker` against the test's control database (`env`: more of its environment). */
export function spawnWorker(h: TestBackhaul, databaseUrl = h.databaseUrl, env: Record<string, string> = {}): ChildProcess {
  return spawn(process.execPath, ['src/cli.ts', 'worker'], {
    env: { ...process.env, DATABASE_URL: databaseUrl, BACKHAUL_ENCRYPTION_KEY: h.bh.config.encryptionKey, LOG_LEVEL: 'fatal', ...env },
    stdio: ['ignore', 'ignore', 'ignore'],
  });
}

export async function kill9(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
}

/**
 * What the stale-run sweep does once a dead worker's heartbeat is old enough (15 s), done at
 * once because the test knows its workers are dead: release their jobs and queues. Call it only
 * while no worker process is alive.
 */
export async function releaseDeadWorkers(db: postgres.Sql): Promise<void> {
  const [{ ids }] = await db<{ ids: string[] }[]>`
    select coalesce(array_agg(distinct w), '{}') as ids from (
      select locked_by as w from graphile_worker._private_jobs where locked_by is not null
      union select locked_by from graphile_worker._private_job_queues where locked_by is not null) x`;
  if (ids.length) await db`select graphile_worker.force_unlock_workers(${ids}::text[])`;
  await db`update runs set worker_id = null where status = 'running'`;
}

/**
 * Runs `backhaul worker` under a tiny supervisor that restarts it when it exits (as systemd or
 * Kubernetes would), releasing its jobs at once first (retried while the database is down).
 * `exits()` counts the restarts; the returned stop() kills the current process for good.
 */
export function superviseWorker(h: TestBackhaul, db: postgres.Sql): { exits(): number; stop(): Promise<void> } {
  let exits = 0;
  let stopping = false;
  let child: ChildProcess;
  const start = () => {
    child = spawnWorker(h);
    child.once('exit', () => {
      if (stopping) return;
      exits++;
      void (async () => {
        for (let i = 0; i < 100; i++) {
          try {
            await releaseDeadWorkers(db);
            break;
          } catch {
            await sleep(200); // the database is still down
          }
        }
        if (!stopping) start();
      })();
    });
  };
  start();
  return {
    exits: () => exits,
    stop: () => {
      stopping = true;
      return kill9(child);
    },
  };
}
