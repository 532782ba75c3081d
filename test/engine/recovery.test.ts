import { spawn, type ChildProcess } from 'node:child_process';
import t from 'tap';
import postgres from 'postgres';
import { loadConfig } from '../../src/config.ts';
import { startBackhaul } from '../../src/server.ts';
import { startTestBackhaul, type TestBackhaul } from '../helpers/backhaul.ts';
import { startFakeCrm } from '../fakes/crm.ts';
import { setupSync, waitForRun } from '../helpers/sync-setup.ts';

const engine = { retryBaseMs: 5, retryMaxMs: 40, heartbeatMs: 200 };

function spawnWorker(h: TestBackhaul): ChildProcess {
  const child = spawn(process.execPath, ['src/cli.ts', 'worker'], {
    env: { ...process.env, DATABASE_URL: h.databaseUrl, BACKHAUL_ENCRYPTION_KEY: h.bh.config.encryptionKey, LOG_LEVEL: 'error' },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  return child;
}

/** A worker-only Backhaul in this process, sweeping stale runs quickly. */
async function inProcessWorker(t: { teardown(fn: () => unknown): void }, h: TestBackhaul) {
  const config = loadConfig({ DATABASE_URL: h.databaseUrl, BACKHAUL_ENCRYPTION_KEY: h.bh.config.encryptionKey!, LOG_LEVEL: 'silent' });
  const bh = await startBackhaul({ config, api: false, worker: true, engine, staleAfterMs: 1500, sweepEveryMs: 300 });
  t.teardown(() => bh.close());
  return bh;
}

t.test('kill -9 of worker processes mid-delivery: the run resumes, nothing is lost, no acknowledged batch is resent', async (t) => {
  const h = await startTestBackhaul(t); // API only: the runs execute in child worker processes
  const crm = await startFakeCrm({ delayMs: 15 });
  t.teardown(() => crm.close());
  const { src, syncId } = await setupSync(t, h, crm.url, { rows: 3000, delivery: { batchSize: 50, concurrency: 2 } });
  const db = postgres(h.databaseUrl, { max: 1, onnotice: () => {} });
  t.teardown(() => db.end());

  // For each row acknowledged (checkpointed) when a worker died: how often the destination had applied it then.
  const appliedAtAck = new Map<string, number>();
  const emailOf = (pk: string) => `user${pk}@example.com`;
  let child = spawnWorker(h);
  const kills: number[] = [12, 35];
  let killing = false;
  crm.onBatch = async () => {
    if (killing || !kills.length || crm.answeredBatches.length < kills[0]) return;
    killing = true;
    kills.shift();
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    // What the dead worker had checkpointed: these rows must never reach the destination again.
    for (const r of await db<{ primary_key: string }[]>`select primary_key from run_outcomes where status = 'succeeded'`) {
      if (!appliedAtAck.has(r.primary_key)) appliedAtAck.set(r.primary_key, crm.applied.get(emailOf(r.primary_key)) ?? 0);
    }
    child = kills.length ? spawnWorker(h) : child;
    killing = false;
  };
  t.teardown(() => child.kill('SIGKILL'));

  const trig = await h.request('POST', `/v1/syncs/${syncId}/runs`, { body: {} });
  // After the second kill no child is left: an in-process worker sweeps the dead one's run and resumes it.
  await waitForRun(h, trig.body.id, 60_000, () => kills.length === 0 && !killing);
  await inProcessWorker(t, h);
  const run = await waitForRun(h, trig.body.id, 90_000);

  t.equal(run.status, 'succeeded', JSON.stringify(run.error));
  t.same(run.counts.succeeded, { insert: 3000, update: 0, delete: 0 });
  const model = await src<{ email: string; name: string; age: number }[]>`select email, name, age from src.people`;
  t.equal(crm.contacts.size, 3000, 'the destination holds every row');
  t.ok(model.every((m) => crm.contacts.get(m.email)?.name === m.name), 'with the right values');
  t.ok(appliedAtAck.size > 0 && appliedAtAck.size < 3000, 'the kills happened mid-delivery');
  const resent = [...appliedAtAck].filter(([pk, n]) => crm.applied.get(emailOf(pk)) !== n);
  t.same(resent, [], 'no row was sent again once acknowledged');
  const extra = [...crm.applied.values()].reduce((a, b) => a + b, 0) - 3000;
  t.ok(extra <= 2 * 2 * 50, `only batches in flight at a kill were sent again (${extra} rows)`);
  const recs = await db`select count(*)::int as n from run_outcomes where run_id = ${run.id} and status = 'succeeded'`;
  t.equal(recs[0].n, 3000, 'one record per row');
});

t.test('two workers and twenty concurrent triggers: runs of one sync never overlap', async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: true, engine } });
  await inProcessWorker(t, h);
  const crm = await startFakeCrm({ delayMs: 5 });
  t.teardown(() => crm.close());
  const { syncId, src } = await setupSync(t, h, crm.url, { rows: 300, delivery: { batchSize: 20, concurrency: 2 } });
  const triggers = await Promise.all(Array.from({ length: 20 }, () => h.request('POST', `/v1/syncs/${syncId}/runs`, { body: {} })));
  t.ok(triggers.every((r) => r.status === 202 || r.status === 200), "a new run answers 202, the queued one it joined 200");
  const ids = [...new Set(triggers.map((r) => r.body.id as string))];
  t.ok(ids.length < 20, `triggers joined the queued run (${ids.length} runs for 20 triggers)`);
  const runs = [];
  for (const id of ids) runs.push(await waitForRun(h, id, 60_000));
  runs.sort((a, b) => a.startedAt.localeCompare(b.startedAt));
  for (let i = 1; i < runs.length; i++) t.ok(runs[i].startedAt >= runs[i - 1].finishedAt, `run ${i} started after run ${i - 1} finished`);
  t.ok(runs.every((r) => r.status === 'succeeded'));
  t.equal(crm.contacts.size, 300);
  void src;
});

t.test('shutdown (SIGTERM path) checkpoints in-flight batches, releases the run promptly, and another worker finishes it', async (t) => {
  const h = await startTestBackhaul(t);
  const crm = await startFakeCrm({ delayMs: 100 });
  t.teardown(() => crm.close());
  const { syncId } = await setupSync(t, h, crm.url, { rows: 2000, delivery: { batchSize: 20, concurrency: 2 } });
  const first = await inProcessWorker(t, h);
  const trig = await h.request('POST', `/v1/syncs/${syncId}/runs`, { body: {} });
  await waitForRun(h, trig.body.id, 30_000, (r) => r.counts.succeeded.insert >= 200);
  // Promptly, counted in batches rather than milliseconds: after close() is called no new batch
  // starts; only the (at most 2 = concurrency) requests already in flight are answered.
  const batchesAtClose = crm.requests;
  await first.close();
  t.ok(crm.requests - batchesAtClose <= 2, `no batch started after the shutdown began (${crm.requests - batchesAtClose} arrived)`);
  const stopped = (await h.request('GET', `/v1/runs/${trig.body.id}`)).body;
  t.equal(stopped.status, 'running', 'the run is not failed by a shutdown');
  t.equal(stopped.counts.succeeded.insert, crm.contacts.size, 'every batch the destination applied was checkpointed');
  const db = postgres(h.databaseUrl, { max: 1, onnotice: () => {} });
  t.teardown(() => db.end());
  const [job] = await db`select locked_by from graphile_worker.jobs where key = ${`run:${trig.body.id}`}`;
  t.equal(job?.locked_by ?? null, null, 'the job was released, not left locked');

  const appliedBefore = new Map(crm.applied);
  await inProcessWorker(t, h);
  const run = await waitForRun(h, trig.body.id, 60_000);
  t.equal(run.status, 'succeeded');
  t.equal(crm.contacts.size, 2000);
  t.ok([...appliedBefore].every(([email, n]) => crm.applied.get(email) === n), 'nothing delivered before the shutdown was sent again');
});

t.test("a finished run's job left locked by a dead worker does not block the sync's next runs", async (t) => {
  const h = await startTestBackhaul(t); // API only for now
  const crm = await startFakeCrm();
  t.teardown(() => crm.close());
  const { syncId } = await setupSync(t, h, crm.url, { rows: 10 });
  const db = postgres(h.databaseUrl, { max: 1, onnotice: () => {} });
  t.teardown(() => db.end());
  // A worker that died between finishing the run and completing its job: run terminal, job and queue locked.
  const first = await h.request('POST', `/v1/syncs/${syncId}/runs`, { body: {} });
  await db`update runs set status = 'succeeded', finished_at = now() - interval '10 minutes', started_at = now() - interval '11 minutes' where id = ${first.body.id}`;
  await db`update graphile_worker._private_jobs set locked_by = 'pool-dead', locked_at = now() - interval '10 minutes', attempts = 1 where key = ${`run:${first.body.id}`}`;
  await db`update graphile_worker._private_job_queues set locked_by = 'pool-dead', locked_at = now() - interval '10 minutes' where queue_name = ${`sync:${syncId}`}`;
  const second = await h.request('POST', `/v1/syncs/${syncId}/runs`, { body: {} });
  t.not(second.body.id, first.body.id);
  await inProcessWorker(t, h);
  const run = await waitForRun(h, second.body.id, 30_000);
  t.equal(run.status, 'succeeded', 'the queue was released and the next run executed');
  t.equal(crm.contacts.size, 10);
  const [firstAgain] = await db`select status from runs where id = ${first.body.id}`;
  t.equal(firstAgain.status, 'succeeded', 'the finished run was not executed again');
});
