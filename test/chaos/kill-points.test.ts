import t from 'tap';
import postgres from 'postgres';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { startFakeCrm } from '../fakes/crm.ts';
import { startReceiver, type Received } from '../fakes/receiver.ts';
import { setupSync } from '../helpers/sync-setup.ts';
import { releaseDeadWorkers } from './helpers.ts';
import { spawnBackhaul, until } from './spawned.ts';

// The outbox of a finished run, proven with kill points: a worker process dies (SIGKILL, from
// BACKHAUL_KILL_POINT) at each step of finishing a run, and another worker takes over. Whatever
// the step, each webhook endpoint gets the run's run.completed exactly once as receivers count it
// (deliveries are deduplicated by webhook-id: one id per run and endpoint, never two), the
// trigger's callbackUrl gets it too, and the alert it raises is raised — and sent to its channel —
// once.

const POINTS = [
  'run-finished:before', // the last batch checkpointed, the run not terminal yet
  'run-finished:uncommitted', // inside the terminal transaction, before COMMIT
  'run-finished:committed', // terminal, outbox job committed, nothing emitted
  'run-finished:emitted-uncommitted', // run.completed emitted, its transaction not committed
  'run-finished:emitted', // run.completed emitted and marked, alerts not evaluated
  'run-finished:alerts-evaluated', // the alert raised, the run not marked evaluated
];

t.setTimeout(1_200_000);

t.test('kill points while finishing a run: no event lost, none duplicated', async (t) => {
  const h = await startTestBackhaul(t); // API only: runs execute in spawned worker processes
  const db = postgres(h.databaseUrl, { max: 1, onnotice: () => {} });
  t.teardown(() => db.end());
  // One row of every run is refused: the run ends partially_succeeded and raises a row_failures alert.
  const crm = await startFakeCrm({ reject: (row) => (row.email === 'user7@example.com' ? 'refused by the test' : undefined) });
  t.teardown(() => crm.close());
  const endpoints = [await startReceiver(), await startReceiver()];
  const callback = await startReceiver();
  const channel = await startReceiver();
  for (const r of [...endpoints, callback, channel]) t.teardown(() => r.close());
  for (const [i, e] of endpoints.entries()) {
    const r = await h.request('POST', '/v1/webhook-endpoints', { body: { slug: `kp-${i}`, name: `Endpoint ${i}`, url: `${e.url}/hook`, events: ['run.completed'] } });
    t.equal(r.status, 201, `endpoint ${i} created`);
  }
  const ch = await h.request('PUT', '/v1/alert-channels/kp-alerts', { body: { name: 'Alerts', type: 'webhook', config: { url: `${channel.url}/alerts` } } });
  t.equal(ch.status, 201, 'alert channel created');

  const ofRun = (all: Received[], runId: string) => all.filter((r) => r.body?.type === 'run.completed' && r.body?.data?.run?.id === runId);
  const ids = (rs: Received[]) => [...new Set(rs.map((r) => String(r.headers['webhook-id'])))];

  for (const [i, point] of POINTS.entries()) {
    await t.test(point, async (t) => {
      const { syncId } = await setupSync(t, h, crm.url, { rows: i === 0 ? 60 : 0, slug: `kp${i}`, delivery: { batchSize: 20, concurrency: 2, maxRetries: 0 } });
      const patch = await h.request('PATCH', `/v1/syncs/${syncId}`, { body: { alerts: { channelIds: ['kp-alerts'], onFailure: false, rowFailurePercent: 0 } } });
      t.equal(patch.status, 200, 'alert rule set: any refused row raises row_failures');

      const doomed = await spawnBackhaul(h, 'worker', { env: { BACKHAUL_KILL_POINT: point } });
      t.teardown(() => doomed.kill9());
      const trig = await h.request('POST', `/v1/syncs/${syncId}/runs`, { body: { callbackUrl: `${callback.url}/cb/${i}` } });
      t.equal(trig.status, 202);
      const runId = trig.body.id as string;
      const exit = await doomed.exited;
      t.equal(exit.signal, 'SIGKILL', `the worker died at ${point}`);

      // Another worker takes over (the dead one's jobs released at once, as the sweep would).
      await releaseDeadWorkers(db);
      const heir = await spawnBackhaul(h, 'worker');
      t.teardown(() => heir.kill9());

      // Everything the run's finish produces has been done: the outbox ran to the end and no job is left.
      await until(
        'the outbox and its deliveries to finish',
        async () => {
          const [r] = await db<{ status: string; emitted: boolean; evaluated: boolean }[]>`
            select status, completed_emitted_at is not null as emitted, alerts_evaluated_at is not null as evaluated from runs where id = ${runId}`;
          if (!r?.emitted || !r.evaluated) return false;
          const [{ n }] = await db<{ n: number }[]>`
            select count(*)::int as n from graphile_worker.jobs
            where task_identifier in ('backhaul_run', 'backhaul_run_finished', 'backhaul_webhook', 'backhaul_alert') and attempts < max_attempts`;
          return n === 0;
        },
        180_000,
        100,
      );
      const [run] = await db<{ status: string }[]>`select status from runs where id = ${runId}`;
      t.equal(run.status, 'partially_succeeded', 'the run finished');

      for (const [k, e] of endpoints.entries()) {
        const got = ofRun(e.received, runId);
        t.ok(got.length >= 1, `endpoint ${k} got run.completed (${got.length} deliveries)`);
        t.equal(ids(got).length, 1, `endpoint ${k}: one webhook-id for the run: a receiver sees one event`);
      }
      const cb = callback.received.filter((r) => r.path === `/cb/${i}`);
      t.ok(cb.length >= 1 && cb.every((r) => r.body?.type === 'run.completed' && r.body?.data?.run?.id === runId), "the trigger's callbackUrl got run.completed");
      t.equal(ids(cb).length, 1, 'the callback too, under one webhook-id');

      const alerts = await db<{ id: string; kind: string }[]>`select id, kind from alerts where sync_id = ${syncId}`;
      t.same(alerts.map((a) => a.kind), ['row_failures'], 'the alert was raised once');
      const raised = channel.received.filter((r) => r.body?.type === 'alert.raised' && r.body?.data?.alert?.alertId === alerts[0]?.id);
      t.equal(raised.length, 1, 'and sent to its channel once');
      t.equal(heir.exit, undefined, 'the worker that took over is running');
      await heir.stop();
    });
  }
});
