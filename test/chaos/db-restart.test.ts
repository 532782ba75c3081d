import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import postgres from 'postgres';
import { freePort, startEmbeddedPostgres, type EmbeddedDatabase } from '../../src/db/embedded.ts';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { startFakeCrm } from '../fakes/crm.ts';
import { setupSync, waitForRun } from '../helpers/sync-setup.ts';
import { env, sleep, superviseWorker } from './helpers.ts';

// The control database (a PostgreSQL of the test's own, so it can be stopped) restarts in the
// middle of a run's delivery. The run must end cleanly — resumed to success, or failed — and
// never count a row as delivered that the destination did not get; a run after it completes the
// destination. The worker is a separate `backhaul worker` process under a tiny supervisor that
// restarts it if it exits (as systemd or Kubernetes would).

const ROWS = env('CHAOS_KILL_ROWS', 3000);

t.test('control database restarted during a run', async (t) => {
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
  const crm = await startFakeCrm({ delayMs: 10 });
  t.teardown(() => crm.close());
  const { src, syncId } = await setupSync(t, h, crm.url, { rows: ROWS, delivery: { batchSize: 50, concurrency: 2, maxRetries: 5 } });

  let restarted: Promise<void> | undefined;
  crm.onBatch = () => {
    if (crm.answeredBatches.length === 10 && !restarted) {
      restarted = (async () => {
        await pg.stop();
        await sleep(1500);
        pg = await startEmbeddedPostgres({ dataDir: dir, port });
      })();
    }
  };
  const trig = await h.request('POST', `/v1/syncs/${syncId}/runs`, { body: {} });
  t.equal(trig.status, 202);
  await new Promise<void>((resolve) => {
    const i = setInterval(() => {
      if (restarted) {
        clearInterval(i);
        resolve();
      }
    }, 20);
  });
  await restarted;
  crm.onBatch = undefined;
  t.pass('the database was stopped and started again mid-delivery');

  const run = await waitForRun(h, trig.body.id, 180_000);
  t.ok(['succeeded', 'failed'].includes(run.status), `the run ended cleanly: ${run.status} ${JSON.stringify(run.error)}`);
  t.comment(`worker process exits during the outage: ${worker.exits()}`);
  const ok = await db<{ primary_key: string }[]>`select primary_key from run_outcomes where run_id = ${run.id} and status = 'succeeded'`;
  const notDelivered = ok.filter((r) => !crm.contacts.has(`user${r.primary_key}@example.com`));
  t.same(notDelivered.slice(0, 5), [], `every row recorded as delivered reached the destination (${ok.length} records)`);
  t.equal(run.counts.succeeded.insert, ok.length, 'the counts match the records');
  t.ok(run.counts.succeeded.insert <= crm.contacts.size, 'the run reports no more rows than the destination holds');
  const [{ n: inSnapshot }] = await db`select count(*)::int as n from sync_snapshots where sync_id = ${syncId}`;
  t.ok(inSnapshot <= crm.contacts.size, 'the snapshot holds only delivered rows');

  if (run.status !== 'succeeded') {
    const again = await h.request('POST', `/v1/syncs/${syncId}/runs`, { body: {} });
    const next = await waitForRun(h, again.body.id, 180_000);
    t.equal(next.status, 'succeeded', 'the next run succeeds');
  }
  const model = await src<{ email: string; name: string }[]>`select email, name from src.people`;
  t.equal(crm.contacts.size, ROWS, 'the destination holds every row in the end');
  t.same(model.filter((m) => crm.contacts.get(m.email)?.name !== m.name).slice(0, 3), []);
});
