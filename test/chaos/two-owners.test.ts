import { randomBytes } from 'node:crypto';
import t from 'tap';
import postgres from 'postgres';
import { loadConfig } from '../../src/config.ts';
import { startBackhaul } from '../../src/server.ts';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { startFakeCrm } from '../fakes/crm.ts';
import { setupSync, waitForRun } from '../helpers/sync-setup.ts';
import { engine } from './helpers.ts';
import { spawnBackhaul, until } from './spawned.ts';

// A run with two owners. Worker A (a `backhaul worker` process) is delivering a run when it
// stalls — SIGSTOP, as a long GC pause or a blocked event loop would, while the destination holds
// its request. Worker B (another instance) finds the run's heartbeat stale, releases that run's
// job — only that job: A's other jobs stay A's — and takes the run over with a new lease. While
// B is mid-run, A wakes up and its held request is answered. A must write nothing (its checkpoint
// is fenced by the lease), send nothing more, and leave B's job alone; B finishes the run; its
// counts equal its records; no row B acknowledged is sent again.

t.test('a stalled worker loses its run to another and writes nothing when it wakes', async (t) => {
  const h = await startTestBackhaul(t); // API only
  const db = postgres(h.databaseUrl, { max: 1, onnotice: () => {} });
  t.teardown(() => db.end());
  const crm = await startFakeCrm({ delayMs: 5 });
  t.teardown(() => crm.close());
  // One batch at a time: exactly one request is in flight when A stalls.
  const { syncId } = await setupSync(t, h, crm.url, { rows: 600, delivery: { batchSize: 30, concurrency: 1, maxRetries: 3 } });

  const a = await spawnBackhaul(h, 'worker');
  t.teardown(() => a.kill9());

  let releaseA!: () => void;
  const heldA = new Promise<void>((r) => (releaseA = r));
  let releaseB!: () => void;
  const heldB = new Promise<void>((r) => (releaseB = r));
  let held: string[] | undefined;
  let stalled = false;
  let bBatches = 0;
  let bHeld = false;
  crm.onBatch = async (emails) => {
    if (!held) {
      if (crm.answeredBatches.length < 4) return;
      held = emails;
      // A stalls with this request in the destination, which answers it only when told.
      a.child.kill('SIGSTOP');
      stalled = true;
      await heldA;
      return;
    }
    // B, after the takeover: its third request is held too, so that A wakes up mid-run.
    if (++bBatches === 3) {
      bHeld = true;
      await heldB;
    }
  };
  const trig = await h.request('POST', `/v1/syncs/${syncId}/runs`, { body: {} });
  const runId = trig.body.id as string;
  await until('worker A to stall mid-run', () => stalled, 120_000, 20);
  const [{ worker_id: poolA, attempts: leaseA }] = await db<{ worker_id: string; attempts: number }[]>`select worker_id, attempts from runs where id = ${runId}`;
  t.ok(poolA, `A holds the run (lease ${leaseA})`);

  // Another job A's worker pool holds (e.g. a webhook being sent): the takeover must leave it to A.
  await db`select graphile_worker.add_job('backhaul_maintenance', '{}'::json, job_key => 'a-other-job')`;
  await db`update graphile_worker._private_jobs set locked_by = ${poolA}, locked_at = now() where key = 'a-other-job'`;

  // Worker B: another instance, sweeping quickly.
  const config = loadConfig({
    DATABASE_URL: h.databaseUrl,
    BACKHAUL_ENCRYPTION_KEY: h.bh.config.encryptionKey!,
    BACKHAUL_BOOTSTRAP_API_KEY: `bh_test${randomBytes(24).toString('base64url')}`,
    LOG_LEVEL: 'silent',
  });
  const b = await startBackhaul({ config, api: false, worker: true, engine, staleAfterMs: 2000, sweepEveryMs: 250 });
  t.teardown(() => b.close());
  await until('B to take the run over and hold a request of its own', () => bHeld, 120_000, 20);
  const [taken] = await db<{ attempts: number; worker_id: string }[]>`select attempts, worker_id from runs where id = ${runId}`;
  t.equal(taken.attempts, leaseA + 1, 'B executes the run under the next lease');
  t.not(taken.worker_id, poolA);
  const [other] = await db<{ locked_by: string | null }[]>`select locked_by from graphile_worker._private_jobs where key = 'a-other-job'`;
  t.equal(other?.locked_by, poolA, "A's other job is still A's: the sweep released the run's job only");

  // Everything as B left it so far (B is held in the destination), to compare once A has woken up.
  const state = async () => ({
    run: (await db`select status, counts, error, attempts, phase, finished_at from runs where id = ${runId}`)[0],
    records: (await db`select count(*)::int as n, coalesce(sum(attempts), 0)::int as attempts, count(*) filter (where redelivered)::int as redelivered from run_outcomes where run_id = ${runId}`)[0],
    snapshot: (await db`select count(*)::int as n, max(updated_at) as at from sync_snapshots where sync_id = ${syncId}`)[0],
    inflight: await db`select lease, batch from run_inflight where run_id = ${runId} order by lease, batch`,
  });
  const before = await state();
  const requestsBefore = crm.requests;

  // A wakes up while B is mid-run, and gets the answer to its held request.
  releaseA();
  a.child.kill('SIGCONT');
  await a.waitForLine(/taken over by another execution/, 120_000);
  t.pass('A found it had lost the run');
  t.equal(crm.requests, requestsBefore, 'A sent nothing after waking up');
  t.same(await state(), before, 'A wrote nothing: run row, records, snapshot and registrations are as B left them');
  const [job] = await db<{ locked_by: string | null }[]>`select locked_by from graphile_worker._private_jobs where key = ${`run:${runId}`}`;
  t.equal(job?.locked_by, taken.worker_id, "A did not complete or release the job B is running");
  t.equal(a.exit, undefined, 'A keeps running');

  releaseB();
  const run = await waitForRun(h, runId, 180_000);
  t.equal(run.status, 'succeeded', `B finished the run: ${JSON.stringify(run.error)}`);
  const sentByB = crm.answeredBatches.slice(4);
  const [{ n, redelivered }] = await db<{ n: number; redelivered: number }[]>`
    select count(*)::int as n, count(*) filter (where redelivered)::int as redelivered from run_outcomes where run_id = ${runId}`;
  t.equal(n, run.counts.succeeded.insert, 'the counts equal the records');
  t.equal(n, 600);
  t.ok(held!.every((e) => sentByB.some((batch) => batch.includes(e))), 'B sent the rows of the batch A had in flight again');
  t.equal(redelivered, held!.length, "those rows, and only those, are marked redelivered");
  const ackedByB = new Set(sentByB.flat());
  t.same(
    [...crm.applied].filter(([email, k]) => k > 1 && !held!.includes(email)).slice(0, 5),
    [],
    `no row B acknowledged was sent twice (${ackedByB.size} rows sent by B)`,
  );

  // The sync's queue is free: its next run executes (on A or B).
  const next = await h.request('POST', `/v1/syncs/${syncId}/runs`, { body: {} });
  t.equal((await waitForRun(h, next.body.id, 120_000)).status, 'succeeded', "the sync's next run executes");
});
