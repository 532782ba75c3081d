import t from 'tap';
import { waitForRun } from '../helpers/sync-setup.ts';
import { env, expectDestinationComplete, ownControlDatabase, until } from './helpers.ts';

// The control database (a PostgreSQL of the test's own, so it can be stopped) restarts in the
// middle of a run's delivery. The run must end cleanly — resumed to success, or failed — and
// never count a row as delivered that the destination did not get; a run after it completes the
// destination. The worker is a separate `backhaul worker` process under a tiny supervisor that
// restarts it if it exits (as systemd or Kubernetes would).

const ROWS = env('CHAOS_KILL_ROWS', 3000);

t.test('control database restarted during a run', async (t) => {
  const { h, db, worker, crm, src, syncId, restart } = await ownControlDatabase(t, { delayMs: 10, rows: ROWS, syncOpts: { delivery: { batchSize: 50, concurrency: 2, maxRetries: 5 } } });

  let restarted: Promise<void> | undefined;
  crm.onBatch = () => {
    if (crm.answeredBatches.length === 10 && !restarted) {
      restarted = restart('stop', 1500);
    }
  };
  const trig = await h.request('POST', `/v1/syncs/${syncId}/runs`, { body: {} });
  t.equal(trig.status, 202);
  await until(() => restarted);
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

  await expectDestinationComplete(t, h, { syncId, run, src, contacts: crm.contacts, rows: ROWS });
});
