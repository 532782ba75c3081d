import t from 'tap';
import postgres from 'postgres';
import { STAGING_SCHEMA, stagingNames } from '../../src/engine/staging.ts';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { startFakeCrm } from '../fakes/crm.ts';
import { setupSync, waitForRun } from '../helpers/sync-setup.ts';
import { releaseDeadWorkers } from './helpers.ts';
import { spawnBackhaul, type Spawned } from './spawned.ts';

// A row sent again after a crash says so. A worker process is killed (kill -9) while the
// destination holds one of its batches; the destination then applies that batch — delivered,
// but never acknowledged to the dead worker. Another worker resumes the run from its checkpoint
// (first case) or, its plan table lost as when PostgreSQL crashes, re-plans it (second case), and
// sends those rows again. Their records must say so: `redelivered: true` and `attempts` counting
// both sends; every other row: `redelivered: false`, `attempts: 1`. Every row the destination got
// twice is marked; no row it got once is.

const ROWS = 1200;

t.test('rows re-sent after kill -9 mid-batch are marked redelivered', async (t) => {
  const h = await startTestBackhaul(t); // API only: runs execute in spawned worker processes
  const db = postgres(h.databaseUrl, { max: 1, onnotice: () => {} });
  t.teardown(() => db.end());
  const crm = await startFakeCrm({ delayMs: 5 });
  t.teardown(() => crm.close());
  const { src, syncId } = await setupSync(t, h, crm.url, { rows: ROWS, delivery: { batchSize: 40, concurrency: 2, maxRetries: 3 } });

  let worker: Spawned = await spawnBackhaul(h, 'worker', { logLevel: 'fatal' });
  t.teardown(() => worker.kill9());

  for (const replan of [false, true]) {
    await t.test(replan ? 'the plan is lost and rebuilt' : 'the run resumes from its checkpoint', async (t) => {
      if (replan) await src`update src.people set name = name || ' v2'`; // every row changes: one update each
      const appliedBefore = new Map(crm.applied);
      const answeredBefore = crm.answeredBatches.length;
      let killed: Promise<void> | undefined;
      let held: string[] = [];
      crm.onBatch = async (emails) => {
        if (killed || crm.answeredBatches.length - answeredBefore < 6) return;
        held = emails;
        // The worker dies while its request is in the destination; the destination then applies it.
        killed = worker.kill9();
        await killed;
      };
      const trig = await h.request('POST', `/v1/syncs/${syncId}/runs`, { body: {} });
      t.equal(trig.status, 202);
      const runId = trig.body.id as string;
      await waitForRun(h, runId, 120_000, () => killed !== undefined);
      await killed;
      crm.onBatch = undefined;

      // What the dead execution had registered as sent and not recorded.
      const inflight = new Set(
        (await db<{ pk: string }[]>`select unnest(primary_keys) as pk from run_inflight where run_id = ${runId}`).map((r) => `user${r.pk}@example.com`),
      );
      t.ok(held.length > 0 && held.every((e) => inflight.has(e)), `the batch held at the kill was registered as sent (${held.length} rows; ${inflight.size} in flight)`);
      if (replan) {
        const { plan } = stagingNames(runId);
        await db.unsafe(`drop table ${STAGING_SCHEMA}.${plan}`);
        t.pass('the plan table is gone, as after a crash of PostgreSQL');
      }

      await releaseDeadWorkers(db);
      worker = await spawnBackhaul(h, 'worker', { logLevel: 'fatal' });
      const run = await waitForRun(h, runId, 180_000);
      t.equal(run.status, 'succeeded', JSON.stringify(run.error));

      const records = await db<{ primary_key: string; attempts: number; redelivered: boolean }[]>`
        select primary_key, attempts, redelivered from run_outcomes where run_id = ${runId} and status = 'succeeded'`;
      t.equal(records.length, ROWS, 'one record per row');
      const sentNow = (email: string) => (crm.applied.get(email) ?? 0) - (appliedBefore.get(email) ?? 0);
      const twice = records.filter((r) => sentNow(`user${r.primary_key}@example.com`) >= 2);
      t.ok(twice.length >= held.length, `the destination got ${twice.length} rows twice`);
      t.same(
        twice.filter((r) => !r.redelivered || r.attempts < 2).slice(0, 5),
        [],
        'every row the destination got twice is marked redelivered, its attempts counting both sends',
      );
      const marked = records.filter((r) => r.redelivered);
      t.same(
        marked.filter((r) => !inflight.has(`user${r.primary_key}@example.com`)).slice(0, 5),
        [],
        'only rows the dead execution had sent are marked',
      );
      t.same(
        records.filter((r) => !r.redelivered && (r.attempts !== 1 || sentNow(`user${r.primary_key}@example.com`) !== 1)).slice(0, 5),
        [],
        'every other row: sent once, attempts 1, not marked',
      );
      const api = await h.request('GET', `/v1/runs/${runId}/records?primaryKey=${encodeURIComponent(held[0].replace(/^user(\d+)@.*$/, '$1'))}`);
      t.equal(api.body?.data?.[0]?.redelivered, true, 'the API shows the mark');
      t.ok(api.body?.data?.[0]?.attempts >= 2, 'and the attempts');
      const listed = await h.request('GET', `/v1/runs/${runId}/records?redelivered=true&limit=200`);
      t.equal(listed.body?.data?.length, marked.length, 'the API lists exactly the marked rows with ?redelivered=true');
      const [{ n }] = await db`select count(*)::int as n from run_inflight where run_id = ${runId}`;
      t.equal(n, 0, 'nothing is left registered once the run finished');
    });
  }
});
