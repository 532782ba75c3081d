import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import postgres from 'postgres';
import t from 'tap';
import { startTestBackhaul, type TestBackhaul } from '../helpers/backhaul.ts';
import { startFakeCrm } from '../fakes/crm.ts';
import { setupSync, waitForRun } from '../helpers/sync-setup.ts';

// Waiting for a run: GET /v1/runs/{id}?wait=S long-polls on the run notifications (one LISTEN
// per process, whatever the number of waiters), GraphQL run(id, wait:), and `backhaul run --wait`
// whose exit code says how the run ended.

const TERMINAL = ['succeeded', 'partially_succeeded', 'failed', 'cancelled'];
const BIN = fileURLToPath(new URL('../../bin/backhaul.js', import.meta.url));

/** Waits for a condition of the process (an event, never a fixed time), up to 60 s. */
async function until(what: string, ok: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (!(await ok())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const waiters = (h: TestBackhaul) => h.bh.services.runWaiter.size;
/** How the server's waits on `runId` ended (its debug log): never `timeout` when a change woke them. */
const endings = (h: TestBackhaul, runId: string) =>
  h.logs.flatMap((c) => c.split('\n').filter(Boolean)).map((l) => JSON.parse(l)).filter((l) => l.msg === 'run wait ended' && l.runId === runId).map((l) => l.endedBy as string);

t.test('a waiter answers as soon as the real worker makes the run terminal', async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: true, engine: { retryBaseMs: 5, heartbeatMs: 200 } } });
  const crm = await startFakeCrm();
  t.teardown(() => crm.close());
  // The CRM holds the first batch until the waiter is parked: the answer must come from a notification.
  crm.onBatch = () => until('the waiter to park', () => waiters(h) >= 1);
  const { syncId } = await setupSync(t, h, crm.url, { rows: 10 });
  const trig = await h.request('POST', `/v1/syncs/${syncId}/runs`, { body: {} });
  t.equal(trig.status, 202);
  const res = await h.request('GET', `/v1/runs/${trig.body.id}?wait=60`);
  t.equal(res.status, 200);
  t.equal(res.headers.get('backhaul-run-terminal'), 'true');
  t.equal(res.body.id, trig.body.id);
  t.equal(res.body.status, 'succeeded');
  t.equal(res.body.counts.succeeded.insert, 10);
  t.equal(waiters(h), 0, 'the waiter is gone');
  t.notOk(endings(h, trig.body.id).includes('timeout'), 'woken by the run change, not by its timer');

  // A terminal run answers at once; GraphQL waits the same way.
  const again = await h.request('GET', `/v1/runs/${trig.body.id}?wait=60`);
  t.equal(again.headers.get('backhaul-run-terminal'), 'true');
  const gql = await h.request('POST', '/graphql', { body: { query: 'query ($id: ID!) { run(id: $id, wait: 60) { id status } }', variables: { id: trig.body.id } } });
  t.same(gql.body.data.run, { id: trig.body.id, status: 'succeeded' });
});

t.test('waiting without a worker: timeout, fan-out on one LISTEN, disconnects, isolation, validation', async (t) => {
  const h = await startTestBackhaul(t); // no worker: a triggered run stays queued
  const crm = await startFakeCrm();
  t.teardown(() => crm.close());
  const { syncId } = await setupSync(t, h, crm.url, { rows: 1 });
  const dbName = new URL(h.databaseUrl).pathname.slice(1);
  const admin = postgres(h.databaseUrl, { max: 1, onnotice: () => {} });
  t.teardown(() => admin.end());
  const trig = await h.request('POST', `/v1/syncs/${syncId}/runs`, { body: {} });
  const runId = trig.body.id as string;

  t.test('the wait times out with the run as it is', async (t) => {
    const res = await h.request('GET', `/v1/runs/${runId}?wait=1`);
    t.equal(res.status, 200);
    t.equal(res.headers.get('backhaul-run-terminal'), 'false');
    t.equal(res.body.status, 'queued');
    t.same(endings(h, runId), ['timeout']);
    t.equal(waiters(h), 0);
  });

  t.test('a bad wait is a validation error', async (t) => {
    for (const w of ['0', '61', '1.5', 'soon', '-3']) {
      const res = await h.request('GET', `/v1/runs/${runId}?wait=${w}`);
      t.equal(res.status, 400, `wait=${w}`);
      t.match(res.headers.get('content-type'), /application\/problem\+json/);
      t.type(res.body.code, 'string');
    }
    const gql = await h.request('POST', '/graphql', { body: { query: `{ run(id: "${runId}", wait: 0) { id } }` } });
    t.equal(gql.body.errors[0].extensions.code, 'invalid_wait');
  });

  t.test("another workspace's run id answers 404 at once", async (t) => {
    const other = await h.request('POST', '/v1/workspaces', { body: { slug: 'other', name: 'Other' } });
    t.equal(other.status, 201);
    const res = await h.request('GET', `/v1/runs/${runId}?wait=60`, { token: other.body.apiKey.token });
    t.equal(res.status, 404);
    t.equal(res.body.code, 'not_found');
    t.notOk(res.text.includes(syncId), 'nothing of the run is revealed');
    t.equal(waiters(h), 0);
  });

  t.test('a waiter whose client goes away is removed', async (t) => {
    const ac = new AbortController();
    const pending = fetch(`${h.url}/v1/runs/${runId}?wait=60`, { headers: { authorization: `Bearer ${h.token}` }, signal: ac.signal }).catch((e: Error) => e);
    await until('the waiter to park', () => waiters(h) === 1);
    ac.abort();
    t.type(await pending, Error);
    await until('the waiter to be removed', () => waiters(h) === 0);
    t.pass('removed');
  });

  t.test('100 waiters on one run share one LISTEN connection and all wake on the change', async (t) => {
    const listeners = async () =>
      Number((await admin`select count(*)::int as n from pg_stat_activity where datname = ${dbName} and query ilike 'listen %'`)[0].n);
    const backends = async () => Number((await admin`select count(*)::int as n from pg_stat_activity where datname = ${dbName} and application_name = 'backhaul'`)[0].n);
    const all = Array.from({ length: 100 }, () => h.request('GET', `/v1/runs/${runId}?wait=60`));
    await until('100 waiters to park', () => waiters(h) === 100);
    t.equal(await listeners(), 1, 'one LISTEN connection in the process');
    // The pool (10 connections, shared with the requests' own reads) and the LISTEN: nothing per waiter.
    t.ok((await backends()) <= 11, 'no connection per waiter');
    // Cancelling the queued run makes it terminal: every waiter answers with it.
    const cancel = await h.request('POST', `/v1/runs/${runId}/cancel`);
    t.equal(cancel.status, 200);
    const answers = await Promise.all(all);
    t.same(new Set(answers.map((a) => `${a.status} ${a.headers.get('backhaul-run-terminal')} ${a.body.status}`)), new Set(['200 true cancelled']));
    t.equal(endings(h, runId).filter((e) => e === 'notification' || e === 'read').length, 100, 'woken by the cancel, not by their timers');
    t.equal(waiters(h), 0);
  });
});

/** Runs the real CLI against the test server; resolves with its exit code and output. */
function cli(h: TestBackhaul, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, BACKHAUL_URL: h.url, BACKHAUL_API_KEY: h.token }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

t.test('backhaul run --wait exits 0 for a succeeded run, 2 partially, 1 failed', async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: true, engine: { retryBaseMs: 5, heartbeatMs: 200 } } });
  const crm = await startFakeCrm({ reject: (row) => (row.email === 'user2@example.com' && rejectOne ? 'blocked address' : undefined) });
  let rejectOne = false;
  t.teardown(() => crm.close());
  const fx = await setupSync(t, h, crm.url, { rows: 3, slug: 'people' });

  const ok = await cli(h, ['run', 'people', '--wait']);
  t.equal(ok.code, 0, ok.stderr);
  const okRun = JSON.parse(ok.stdout);
  t.equal(okRun.status, 'succeeded');
  t.match(okRun.id, /^run_/);

  rejectOne = true;
  const partial = await cli(h, ['run', 'people', '--wait', '--full-resync']);
  t.equal(partial.code, 2, partial.stderr);
  t.equal(JSON.parse(partial.stdout).status, 'partially_succeeded');
  t.equal(JSON.parse(partial.stdout).fullResync, true);

  // The model's table is gone: the run fails.
  await fx.src`alter table src.people rename to gone`;
  const failed = await cli(h, ['run', 'people', '--wait', '--timeout', '120']);
  t.equal(failed.code, 1, failed.stderr);
  t.equal(JSON.parse(failed.stdout).status, 'failed');

  // Without --wait: the queued run is printed and the exit is 0 whatever happens next.
  const queued = await cli(h, ['run', 'people']);
  t.equal(queued.code, 0, queued.stderr);
  const q = JSON.parse(queued.stdout);
  t.ok(['queued', 'running', ...TERMINAL].includes(q.status));
  await waitForRun(h, q.id);

  const unknown = await cli(h, ['run', 'nope', '--wait']);
  t.equal(unknown.code, 4, 'an unknown sync is not a run outcome');
  t.match(unknown.stderr, /404/);
});
