import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import postgres from 'postgres';
import type { Test } from 'tap';
import type { TestBackhaul } from '../helpers/backhaul.ts';
import { setupSync, waitForRun } from '../helpers/sync-setup.ts';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { startFakeCrm } from '../fakes/crm.ts';
import { freePort, startEmbeddedPostgres, type EmbeddedDatabase } from '../../src/db/embedded.ts';

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

/** Resolves once `cond()` is truthy (checked every 20 ms; the test's own timeout bounds it). */
export async function until(cond: () => unknown): Promise<void> {
  while (!cond()) await sleep(20);
}

/**
 * After a run interrupted by a fault: when it did not succeed, the next run must; then the
 * destination (the fake CRM, keyed by email) holds every row of src.people with its current name.
 */
export async function expectDestinationComplete(
  t: Test,
  h: TestBackhaul,
  o: { syncId: string; run: { status: string }; src: postgres.Sql; contacts: Map<string, { name?: unknown }>; rows: number },
): Promise<void> {
  if (o.run.status !== 'succeeded') {
    const again = await h.request('POST', `/v1/syncs/${o.syncId}/runs`, { body: {} });
    const next = await waitForRun(h, again.body.id, 180_000);
    t.equal(next.status, 'succeeded', 'the next run succeeds');
  }
  const model = await o.src<{ email: string; name: string }[]>`select email, name from src.people`;
  t.equal(o.contacts.size, o.rows, 'the destination holds every row in the end');
  t.same(model.filter((m) => o.contacts.get(m.email)?.name !== m.name).slice(0, 3), [], 'with its current values');
}

/**
 * A Backhaul whose control database is a PostgreSQL of the test's own (so it can be stopped or
 * crashed), with one `backhaul worker` under superviseWorker, a fake CRM (`delayMs` per batch)
 * and a src.people → CRM sync of `rows` rows (`syncOpts`: setupSync's). `restart('stop')` is a
 * clean shutdown (unlogged tables kept) followed by a pause; `restart('crash')` an immediate
 * shutdown (SIGQUIT to the postmaster: crash recovery on the next start empties unlogged tables).
 */
export async function ownControlDatabase(t: Test, o: { delayMs: number; rows: number; syncOpts?: Parameters<typeof setupSync>[3] }) {
  const dir = mkdtempSync(join(tmpdir(), 'bh-chaos-pg-'));
  const port = await freePort();
  let pg: EmbeddedDatabase = await startEmbeddedPostgres({ dataDir: dir, port });
  t.teardown(async () => {
    await pg.stop().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  });
  const h = await startTestBackhaul(t, { env: { DATABASE_URL: pg.url } });
  const db = postgres(h.databaseUrl, { max: 1, onnotice: () => {} });
  t.teardown(() => db.end());
  // The only worker, restarted whenever it exits.
  const worker = superviseWorker(h, db);
  t.teardown(() => worker.stop());
  const crm = await startFakeCrm({ delayMs: o.delayMs });
  t.teardown(() => crm.close());
  const { src, syncId } = await setupSync(t, h, crm.url, { rows: o.rows, ...o.syncOpts });
  const restart = async (how: 'stop' | 'crash', pauseMs = 0) => {
    if (how === 'stop') await pg.stop();
    else {
      const pid = Number(readFileSync(join(dir, 'pg', 'postmaster.pid'), 'utf8').split('\n')[0]);
      process.kill(pid, 'SIGQUIT');
      while (alive(pid)) await sleep(50);
    }
    await sleep(pauseMs);
    pg = await startEmbeddedPostgres({ dataDir: dir, port });
  };
  return { h, db, worker, crm, src, syncId, restart };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
