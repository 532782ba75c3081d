import type { ChildProcess } from 'node:child_process';
import t from 'tap';
import postgres from 'postgres';
import { startWorker } from '../../src/engine/worker.ts';
import { startTestBackhaul, type TestBackhaul } from '../helpers/backhaul.ts';
import { startFakeCrm } from '../fakes/crm.ts';
import { setupSync } from '../helpers/sync-setup.ts';
import { kill9, spawnWorker } from '../chaos/helpers.ts';

// A job locked by a worker process that is gone (kill -9) comes back within seconds through the
// process heartbeats (worker_processes), not after graphile-worker's 4-hour lock expiry; a job
// held by a live worker whose task is slow is never released. Real worker child processes.

async function until(cond: () => Promise<boolean>, what: string, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const exited = (child: ChildProcess) =>
  child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise<void>((r) => child.once('exit', () => r()));

t.test('a schedule job of a killed worker fires on another worker; a slow live worker keeps its job', async (t) => {
  const h: TestBackhaul = await startTestBackhaul(t); // API only: the workers are below
  const crm = await startFakeCrm();
  t.teardown(() => crm.close());
  const killed = await setupSync(t, h, crm.url, { rows: 1, slug: 'killed' });
  const slow = await setupSync(t, h, crm.url, { slug: 'slow' });
  const db = postgres(h.databaseUrl, { max: 2, onnotice: () => {} });
  t.teardown(() => db.end());

  // Hourly slots: a job is due only when the test says so (fireNow).
  const anchor = new Date(Date.now() + 3_600_000).toISOString();
  for (const syncId of [killed.syncId, slow.syncId]) {
    const r = await h.request('PATCH', `/v1/syncs/${syncId}`, { body: { schedule: { type: 'interval', everySeconds: 3600, anchor } } });
    t.equal(r.status, 200);
  }
  const fireNow = (syncId: string) => db`update graphile_worker._private_jobs set run_at = now() where key = ${`schedule:${syncId}`}`;
  const lockOf = async (syncId: string) => {
    const [j] = await db<{ locked_by: string | null; locked_at: Date | null }[]>`
      select locked_by, locked_at from graphile_worker._private_jobs where key = ${`schedule:${syncId}`}`;
    return j;
  };
  const runsOf = async (syncId: string) => (await db<{ n: number }[]>`select count(*)::int as n from runs where sync_id = ${syncId}`)[0].n;

  // Worker C takes the first sync's slot and dies (kill -9) before firing it.
  const c = spawnWorker(h, h.databaseUrl, { BACKHAUL_KILL_POINT: `schedule:fire:${killed.syncId}` });
  t.teardown(() => kill9(c));
  await fireNow(killed.syncId);
  await exited(c);
  t.equal(c.signalCode, 'SIGKILL', 'the worker died at the fire');
  const dead = await lockOf(killed.syncId);
  t.ok(dead.locked_by, 'its slot is left locked by the dead worker');
  t.equal(await runsOf(killed.syncId), 0, 'and did not fire');

  // Worker A is alive but its fire of the second sync never ends (it keeps its heartbeat).
  const a = spawnWorker(h, h.databaseUrl, { BACKHAUL_STALL_POINT: `schedule:fire:${slow.syncId}` });
  t.teardown(() => kill9(a));
  await fireNow(slow.syncId);
  await until(async () => !!(await lockOf(slow.syncId)).locked_by, 'the slow worker to take its slot');
  const held = await lockOf(slow.syncId);

  // Worker B (in this process, sweeping every second): the dead worker's slot fires here or in A.
  const b = await startWorker({ database: h.bh.database, services: h.bh.services, logger: h.bh.logger, concurrency: 1, recordRetentionDays: 30, sweepEveryMs: 1000 });
  t.teardown(() => b.stop());
  await until(async () => (await runsOf(killed.syncId)) > 0, "the dead worker's slot to fire on a live worker");
  t.pass("the dead worker's slot fired on a live worker");
  await until(async () => (await lockOf(killed.syncId)).locked_by === null, 'the fired slot to be re-planned and unlocked');

  // The slow slot has now been locked longer than a process is given to answer; a sweep leaves it.
  await until(async () => {
    const [{ old }] = await db<{ old: boolean }[]>`
      select locked_at < now() - interval '25 seconds' as old from graphile_worker._private_jobs where key = ${`schedule:${slow.syncId}`}`;
    return old;
  }, 'the slow slot to be locked for longer than the process stale interval');
  await b.sweep();
  const after = await lockOf(slow.syncId);
  t.equal(after.locked_by, held.locked_by, "the slow live worker's slot is still its own");
  t.same(after.locked_at, held.locked_at);
  t.equal(a.exitCode, null, 'the slow worker is alive');
  t.equal(await runsOf(slow.syncId), 0, 'and its slot did not fire elsewhere');
});
