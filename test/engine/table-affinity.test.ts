import t from 'tap';
import postgres from 'postgres';
import { AffinityFlags } from '../../src/engine/affinity.ts';
import { startWorker, type Worker } from '../../src/engine/worker.ts';
import { startTestBackhaul, type TestBackhaul } from '../helpers/backhaul.ts';
import { startFakeCrm } from '../fakes/crm.ts';
import { runToEnd, setupSync, waitForRun } from '../helpers/sync-setup.ts';

// Job affinity (engine/affinity.ts): with several workers, a sync's runs go to the worker that
// ran its last run, which kept the sync's comparison table, while that worker is alive and has a
// free run slot; a worker that is gone or busy holds nothing up.

async function until(cond: () => Promise<boolean>, what: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const startIn = (h: TestBackhaul): Promise<Worker> =>
  startWorker({ database: h.bh.database, services: h.bh.services, logger: h.bh.logger, concurrency: 2, recordRetentionDays: 30, processHeartbeatMs: 200, affinityRefreshMs: 50 });

/** How the run read the model, from its worker's log line (QueryStats). */
function readOf(h: TestBackhaul, runId: string): { incremental: boolean; keptTable?: boolean } | undefined {
  for (const line of h.logs) {
    if (!line.includes(runId) || !line.includes('"read"')) continue;
    const l = JSON.parse(line);
    if (l.runId === runId && l.read) return l.read;
  }
  return undefined;
}

t.test("a sync's runs go to the worker that kept its table, and use it", async (t) => {
  const h = await startTestBackhaul(t); // API only: the two workers are below
  const crm = await startFakeCrm();
  t.teardown(() => crm.close());
  const { src, syncId } = await setupSync(t, h, crm.url, { rows: 200 });
  const db = postgres(h.databaseUrl, { max: 1, onnotice: () => {} });
  t.teardown(() => db.end());
  const a = await startIn(h);
  t.teardown(() => a.stop());
  const b = await startIn(h);
  t.teardown(() => b.stop());
  const poolOf = async (runId: string) => (await db<{ w: string }[]>`select worker_id as w from runs where id = ${runId}`)[0].w;

  const first = await runToEnd(h, syncId);
  t.equal(first.status, 'succeeded');
  const home = await poolOf(first.id);
  for (let i = 1; i <= 6; i++) {
    await src`update src.people set age = age + 1 where id = ${i}`;
    const trig = await h.request('POST', `/v1/syncs/${syncId}/runs`, { body: {} });
    t.equal(trig.status, 202);
    const [job] = await db<{ flags: Record<string, boolean> | null }[]>`select flags from graphile_worker._private_jobs where key = ${`run:${trig.body.id}`}`;
    // The job may already be done; when it is still there it names the sync's worker.
    if (job) t.same(job.flags, { [`table:${home}`]: true }, 'the job is flagged for the pool that ran the last run');
    const run = await waitForRun(h, trig.body.id);
    t.equal(run.status, 'succeeded');
    t.equal(await poolOf(run.id), home, `run ${i + 1} ran on the worker that ran the sync's last run`);
    const read = readOf(h, run.id);
    t.ok(read?.incremental, 'incremental');
    // The first incremental run loads the table; every later one finds it kept.
    if (i > 1) t.equal(read?.keptTable, true, 'it used the table that worker kept');
  }
  t.equal(crm.contacts.size, 200);
});

t.test("a gone or busy worker's flag holds no run; the flags a worker skips", async (t) => {
  const h = await startTestBackhaul(t);
  const crm = await startFakeCrm();
  t.teardown(() => crm.close());
  const { syncId } = await setupSync(t, h, crm.url, { rows: 20 });
  const db = postgres(h.databaseUrl, { max: 1, onnotice: () => {} });
  t.teardown(() => db.end());
  const a = await startIn(h);
  t.teardown(() => a.stop());

  // Other processes as their heartbeats left them: the flags a worker skips are exactly those of
  // the live ones with a free run slot.
  await db`
    insert into worker_processes (id, pool_ids, host, pid, idle_run_slots, last_seen_at) values
      ('live', '{live-1,live-2}', 'h', 1, 1, now()),
      ('busy', '{busy-1}', 'h', 2, 0, now()),
      ('gone', '{gone-1}', 'h', 3, 4, now() - interval '1 minute')`;
  // (The worker started above is live too: only these three processes' flags are looked at.)
  const fake = (f: string[]) => f.filter((x) => /^table:(live|busy|gone)-/.test(x)).sort();
  const flags = new AffinityFlags(db, { processId: 'live', refreshMs: 0, freshMs: 5000 });
  await flags.refresh();
  t.same(fake(flags.forbidden()), [], 'its own pools, busy and gone processes: none skipped');
  const other = new AffinityFlags(db, { processId: 'someone', refreshMs: 60_000, freshMs: 5000 });
  t.same(other.forbidden(), [], 'nothing is skipped before the first read');
  await other.refresh();
  t.same(fake(other.forbidden()), ['table:live-1', 'table:live-2'], 'a live process with a free slot: its pools are skipped');
  await db`delete from worker_processes where id in ('live', 'busy', 'gone')`;

  // The sync's last run "ran" on a pool of a process that is gone, then on one that is busy:
  // the run is flagged for it and the worker that is there runs it all the same.
  const first = await runToEnd(h, syncId);
  t.equal(first.status, 'succeeded');
  for (const [id, idle, seen] of [
    ['ghost', 1, `now() - interval '1 minute'`],
    ['busy', 0, 'now()'],
  ] as const) {
    await db.unsafe(`insert into worker_processes (id, pool_ids, host, pid, idle_run_slots, last_seen_at) values ('${id}', '{${id}-pool}', 'h', 9, ${idle}, ${seen})`);
    await db`update runs set worker_id = ${`${id}-pool`} where sync_id = ${syncId} and status = 'succeeded'`;
    const trig = await h.request('POST', `/v1/syncs/${syncId}/runs`, { body: {} });
    t.equal(trig.status, 202);
    const run = await waitForRun(h, trig.body.id);
    t.equal(run.status, 'succeeded', `a run flagged for a ${id} process ran`);
    await until(async () => (await db`select 1 from runs where id = ${run.id} and worker_id <> ${`${id}-pool`}`).length === 1, 'the run to be recorded as run here');
  }
});
