import { spawn, type ChildProcess } from 'node:child_process';
import t from 'tap';
import postgres from 'postgres';
import { loadConfig } from '../../src/config.ts';
import { startBackhaul } from '../../src/server.ts';
import { startTestBackhaul, type TestBackhaul } from '../helpers/backhaul.ts';
import { startFakeCrm, type FakeCrm } from '../fakes/crm.ts';
import { setupSync, waitForJobsDone } from '../helpers/sync-setup.ts';
import { startReceiver, verifyWebhook } from '../fakes/receiver.ts';

// Sequences: syncs run one after another by the real worker against real HTTP destinations.

const engine = { retryBaseMs: 5, retryMaxMs: 40, heartbeatMs: 200 };
const TERMINAL = ['succeeded', 'failed', 'cancelled'];

async function waitForSequenceRun(h: TestBackhaul, id: string, until: (r: any) => boolean = (r) => TERMINAL.includes(r.status), timeoutMs = 90_000): Promise<any> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await h.request('GET', `/v1/sequence-runs/${id}`);
    if (r.status !== 200) throw new Error(`GET sequence run: ${r.status} ${r.text}`);
    if (until(r.body)) return r.body;
    if (Date.now() > deadline) throw new Error(`sequence run ${id} not there: ${JSON.stringify(r.body)}`);
    await new Promise((res) => setTimeout(res, 50));
  }
}

/** Three syncs (a, b, c) of the same 30 rows, each to its own CRM; `order` lists which CRM got each batch, in arrival order. */
async function threeSyncs(t: { teardown(fn: () => unknown): void }, h: TestBackhaul, opts: { failing?: 'b'; rows?: number; delayMs?: number } = {}) {
  const order: string[] = [];
  const crms: Record<string, FakeCrm> = {};
  const ids: Record<string, string> = {};
  for (const name of ['a', 'b', 'c']) {
    const crm = await startFakeCrm({ delayMs: opts.delayMs });
    t.teardown(() => crm.close());
    crm.onBatch = () => void order.push(name);
    crms[name] = crm;
    const f = await setupSync(t, h, crm.url, {
      slug: `sync-${name}`,
      rows: name === 'a' ? (opts.rows ?? 30) : undefined,
      delivery: { batchSize: 10, concurrency: 1 },
      // The change guard fails a run before it sends anything.
      ...(opts.failing === name ? { changeThresholds: { maxChanges: 0 } } : {}),
    });
    ids[name] = f.syncId;
  }
  return { order, crms, ids };
}

t.test('a 3-step sequence runs its syncs in order; its run, webhook and audit trail', async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: true, engine } });
  const rx = await startReceiver();
  t.teardown(() => rx.close());
  const { order, crms, ids } = await threeSyncs(t, h);
  const ep = await h.request('POST', '/v1/webhook-endpoints', { body: { slug: 'seq-hook', name: 'Seq', url: `${rx.url}/hook`, events: ['sequence_run.completed'] } });
  t.equal(ep.status, 201);

  const created = await h.request('POST', '/v1/sequences', {
    body: { slug: 'nightly', name: 'Nightly', steps: [{ syncId: 'sync-a' }, { syncId: ids.b }, { syncId: 'sync-c' }] },
  });
  t.equal(created.status, 201, created.text);
  t.match(created.body, { id: /^seq_/, slug: 'nightly', onFailure: 'stop', enabled: true, schedule: { type: 'manual' }, version: 1 });
  t.same(
    created.body.steps,
    ['a', 'b', 'c'].map((n) => ({ syncId: ids[n], syncSlug: `sync-${n}` })),
    'steps by id, with the slugs beside them',
  );
  t.equal(created.headers.get('etag'), '"1"');

  const trig = await h.request('POST', '/v1/sequences/nightly/runs', { headers: { 'idempotency-key': 'nightly-1' } });
  t.equal(trig.status, 202, trig.text);
  t.match(trig.body, { id: /^seqrun_/, sequenceId: created.body.id, trigger: 'api' });
  t.equal(trig.headers.get('location'), `/v1/sequence-runs/${trig.body.id}`);
  const replay = await h.request('POST', '/v1/sequences/nightly/runs', { headers: { 'idempotency-key': 'nightly-1' } });
  t.equal(replay.body.id, trig.body.id, 'an idempotent retry of the trigger answers the same sequence run');
  const joined = await h.request('POST', '/v1/sequences/nightly/runs');
  t.equal(joined.status, 200, 'a trigger while a sequence run is active returns it');
  t.equal(joined.headers.get('backhaul-existing-run'), 'true');
  t.equal(joined.body.id, trig.body.id);

  const waited = await h.request('GET', `/v1/sequence-runs/${trig.body.id}?wait=60`);
  const done = TERMINAL.includes(waited.body.status) ? waited.body : await waitForSequenceRun(h, trig.body.id);
  t.equal(done.status, 'succeeded', JSON.stringify(done));
  t.equal(done.error, null);
  t.equal(done.currentStep, null);
  t.same(done.steps.map((s: any) => [s.position, s.syncId, s.status]), [
    [1, ids.a, 'succeeded'],
    [2, ids.b, 'succeeded'],
    [3, ids.c, 'succeeded'],
  ]);
  // Every step's run exists, belongs to its sync, and ran after the previous one finished.
  const runs = [];
  for (const s of done.steps) runs.push((await h.request('GET', `/v1/runs/${s.runId}`)).body);
  t.same(runs.map((r) => [r.syncId, r.status]), [ids.a, ids.b, ids.c].map((id) => [id, 'succeeded']));
  for (let i = 1; i < runs.length; i++) t.ok(runs[i].startedAt >= runs[i - 1].finishedAt, `step ${i + 1}'s run started after step ${i}'s finished`);
  t.same(order, [...Array(3).fill('a'), ...Array(3).fill('b'), ...Array(3).fill('c')], "the destinations saw step 1's rows, then step 2's, then step 3's");
  for (const n of ['a', 'b', 'c']) t.equal(crms[n].contacts.size, 30, `CRM ${n} holds every row`);

  // Waiting answers terminal sequence runs at once, with the header.
  const again = await h.request('GET', `/v1/sequence-runs/${trig.body.id}?wait=5`);
  t.equal(again.headers.get('backhaul-run-terminal'), 'true');

  const list = await h.request('GET', '/v1/sequences/nightly/runs');
  t.same(list.body.data.map((r: any) => r.id), [trig.body.id]);
  t.same((await h.request('GET', '/v1/sequences/nightly/runs?status=failed')).body.data, []);

  // The completion event, signed, with the sequence run.
  await rx.waitFor((all) => all.some((r) => r.body?.type === 'sequence_run.completed'));
  const hook = rx.received.find((r) => r.body?.type === 'sequence_run.completed')!;
  t.ok(verifyWebhook(ep.body.secret, hook.headers, hook.raw), 'sequence_run.completed is signed with the endpoint secret');
  t.same(hook.body.data.sequenceRun, done, 'and carries the sequence run as GET shows it');
  t.match(hook.body.data.sequence, { id: created.body.id, slug: 'nightly', name: 'Nightly' });

  const audit = await h.request('GET', `/v1/audit-events?resourceType=sequence_run&resourceId=${trig.body.id}`);
  t.same(audit.body.data.map((e: any) => e.action), ['trigger']);
});

t.test('sequence CRUD: ETag/If-Match, PUT of the GET body, slug refs, a sync in a sequence cannot be deleted, another workspace is refused', async (t) => {
  const h = await startTestBackhaul(t);
  const crm = await startFakeCrm();
  t.teardown(() => crm.close());
  const a = await setupSync(t, h, crm.url, { slug: 'one' });
  const b = await setupSync(t, h, crm.url, { slug: 'two' });
  const created = await h.request('PUT', '/v1/sequences/daily', {
    body: { name: 'Daily', steps: [{ syncId: 'one' }, { syncId: 'two' }], schedule: { type: 'cron', expression: '0 6 * * *', timezone: 'Europe/Paris' }, onFailure: 'continue' },
  });
  t.equal(created.status, 201, created.text);
  t.same(created.body.schedule, { type: 'cron', expression: '0 6 * * *', timezone: 'Europe/Paris' });

  const db = postgres(h.databaseUrl, { max: 1, onnotice: () => {} });
  t.teardown(() => db.end());
  const [job] = await db`select run_at from graphile_worker.jobs where key = ${`sequence-schedule:${created.body.id}`}`;
  t.ok(job, 'the cron schedule planned a job');
  t.equal(new Date(job.run_at).getUTCMinutes(), 0, 'at a slot of the expression');

  const got = await h.request('GET', '/v1/sequences/daily');
  const putBack = await h.request('PUT', `/v1/sequences/daily`, { body: got.body, headers: { 'if-match': '"1"' } });
  t.equal(putBack.status, 200, putBack.text);
  t.equal(putBack.body.version, 1, 'putting the GET body back changes nothing');
  const stale = await h.request('PATCH', '/v1/sequences/daily', { body: { name: 'x' }, headers: { 'if-match': '"7"' } });
  t.equal(stale.status, 412);
  const patched = await h.request('PATCH', '/v1/sequences/daily', { body: { steps: [{ syncId: b.syncId }], schedule: { type: 'manual' } }, headers: { 'if-match': '"1"' } });
  t.equal(patched.status, 200, patched.text);
  t.equal(patched.body.version, 2);
  t.equal(patched.headers.get('etag'), '"2"');
  t.same(patched.body.steps, [{ syncId: b.syncId, syncSlug: 'two' }]);
  t.equal((await db`select count(*)::int as n from graphile_worker.jobs where key = ${`sequence-schedule:${created.body.id}`}`)[0].n, 0, 'a manual schedule removes the job');
  const wrongSlug = await h.request('PUT', '/v1/sequences/daily', { body: { ...patched.body, steps: [{ syncId: b.syncId, syncSlug: 'one' }] } });
  t.equal(wrongSlug.status, 422);
  t.equal(wrongSlug.body.code, 'read_only_field');

  const inUse = await h.request('DELETE', '/v1/syncs/two');
  t.equal(inUse.status, 409);
  t.equal(inUse.body.code, 'resource_in_use');
  t.match(inUse.body.detail, /sequence "daily"/);
  t.equal((await h.request('DELETE', '/v1/syncs/one')).status, 204, 'a sync no longer in a sequence can go');

  const unknown = await h.request('POST', '/v1/sequences', { body: { slug: 'bad', name: 'Bad', steps: [{ syncId: 'nope' }] } });
  t.equal(unknown.status, 422);
  t.equal(unknown.body.code, 'invalid_reference');
  t.same(unknown.body.errors.map((e: any) => e.path), ['/steps/0/syncId']);
  t.equal((await h.request('POST', '/v1/sequences', { body: { slug: 'empty', name: 'E', steps: [] } })).status, 400);

  // Another workspace sees none of it, and cannot use this workspace's syncs.
  const ws = await h.request('POST', '/v1/workspaces', { body: { slug: 'other', name: 'Other' } });
  const other = ws.body.apiKey.token as string;
  const foreign = await h.request('POST', '/v1/sequences', { token: other, body: { slug: 'steal', name: 'Steal', steps: [{ syncId: b.syncId }] } });
  t.equal(foreign.status, 422, 'a sync of another workspace is refused');
  t.equal(foreign.body.code, 'invalid_reference');
  t.equal((await h.request('GET', `/v1/sequences/${created.body.id}`, { token: other })).status, 404);
  t.equal((await h.request('POST', `/v1/sequences/${created.body.id}/runs`, { token: other })).status, 404);
  t.same((await h.request('GET', '/v1/sequences', { token: other })).body.data, []);

  const disabled = await h.request('PATCH', '/v1/sequences/daily', { body: { enabled: false } });
  t.equal(disabled.status, 200);
  const refused = await h.request('POST', '/v1/sequences/daily/runs');
  t.equal(refused.status, 409);
  t.equal(refused.body.code, 'sequence_disabled');

  t.equal((await h.request('DELETE', '/v1/sequences/daily', { headers: { 'if-match': '"1"' } })).status, 412);
  t.equal((await h.request('DELETE', '/v1/sequences/daily')).status, 204);
  t.equal((await h.request('DELETE', '/v1/syncs/two')).status, 204, 'once the sequence is gone its syncs can be deleted');
  const audit = await h.request('GET', `/v1/audit-events?resourceType=sequence&resourceId=${created.body.id}`);
  t.same(audit.body.data.map((e: any) => e.action).sort(), ['create', 'delete', 'update', 'update'].sort());
  void a;
});

t.test('onFailure stop: the failed step ends the sequence run, naming it; later steps do not run', async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: true, engine } });
  const { crms, ids } = await threeSyncs(t, h, { failing: 'b' });
  await h.request('POST', '/v1/sequences', { body: { slug: 's', name: 'S', steps: [{ syncId: 'sync-a' }, { syncId: 'sync-b' }, { syncId: 'sync-c' }] } });
  const trig = await h.request('POST', '/v1/sequences/s/runs');
  const done = await waitForSequenceRun(h, trig.body.id);
  t.equal(done.status, 'failed');
  t.match(done.error, { code: 'step_failed', position: 2, syncId: ids.b, message: /Step 2 \(sync "sync-b"\) failed: / });
  t.same(done.steps.map((s: any) => s.status), ['succeeded', 'failed', 'skipped']);
  t.equal(done.steps[1].error.code, 'change_guard');
  t.equal(done.steps[2].runId, null, 'step 3 never ran');
  await waitForJobsDone(h);
  t.equal(crms.c.requests, 0, "step 3's destination got nothing");
  t.same((await h.request('GET', `/v1/syncs/${ids.c}/runs`)).body.data, []);
});

t.test('onFailure continue: later steps run; the sequence run fails naming the failed step', async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: true, engine } });
  const { crms, ids } = await threeSyncs(t, h, { failing: 'b' });
  await h.request('POST', '/v1/sequences', { body: { slug: 's', name: 'S', onFailure: 'continue', steps: [{ syncId: 'sync-a' }, { syncId: 'sync-b' }, { syncId: 'sync-c' }] } });
  const trig = await h.request('POST', '/v1/sequences/s/runs');
  const done = await waitForSequenceRun(h, trig.body.id);
  t.equal(done.status, 'failed');
  t.same(done.steps.map((s: any) => s.status), ['succeeded', 'failed', 'succeeded']);
  t.match(done.error, { code: 'step_failed', position: 2, syncId: ids.b });
  t.equal(crms.c.contacts.size, 30, 'step 3 ran');
});

t.test('cancel: the current step run is cancelled, later steps are skipped', async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: true, engine } });
  const { crms, ids } = await threeSyncs(t, h, { rows: 200 });
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let reached!: () => void;
  const arrived = new Promise<void>((r) => (reached = r));
  crms.a.onBatch = async () => {
    reached();
    await gate;
  };
  await h.request('POST', '/v1/sequences', { body: { slug: 's', name: 'S', steps: [{ syncId: 'sync-a' }, { syncId: 'sync-b' }, { syncId: 'sync-c' }] } });
  const trig = await h.request('POST', '/v1/sequences/s/runs');
  await arrived;
  const cancelled = await h.request('POST', `/v1/sequence-runs/${trig.body.id}/cancel`);
  t.equal(cancelled.status, 200, cancelled.text);
  t.equal(cancelled.body.status, 'cancelled');
  t.same(cancelled.body.steps.map((s: any) => s.status), ['cancelled', 'skipped', 'skipped']);
  t.match(cancelled.body.error, { code: 'cancelled' });
  release();
  const stepRun = await waitForSequenceRun(h, trig.body.id);
  t.equal(stepRun.status, 'cancelled');
  await waitForJobsDone(h, ['backhaul_run', 'backhaul_sequence_advance']);
  const run = (await h.request('GET', `/v1/runs/${cancelled.body.steps[0].runId}`)).body;
  t.equal(run.status, 'cancelled', "step 1's run was cancelled with the sequence run");
  t.equal(crms.b.requests + crms.c.requests, 0, 'no later step ran');
  t.same((await h.request('GET', `/v1/syncs/${ids.b}/runs`)).body.data, []);
  const again = await h.request('POST', `/v1/sequence-runs/${trig.body.id}/cancel`);
  t.equal(again.status, 409);
  t.equal(again.body.code, 'run_finished');
});

t.test('a worker killed in the middle of a sequence: another worker carries it on from the database', async (t) => {
  const h = await startTestBackhaul(t); // API only: the worker runs in a child process, then here
  const { order, crms, ids } = await threeSyncs(t, h, { rows: 100 });
  const child: ChildProcess = spawn(process.execPath, ['src/cli.ts', 'worker'], {
    env: { ...process.env, DATABASE_URL: h.databaseUrl, BACKHAUL_ENCRYPTION_KEY: h.bh.config.encryptionKey, LOG_LEVEL: 'error' },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  t.teardown(() => child.kill('SIGKILL'));
  let killed!: () => void;
  const dead = new Promise<void>((r) => (killed = r));
  crms.b.onBatch = async () => {
    order.push('b');
    if (crms.b.answeredBatches.length === 2 && child.exitCode === null) {
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      killed();
    }
  };
  await h.request('POST', '/v1/sequences', { body: { slug: 's', name: 'S', steps: [{ syncId: 'sync-a' }, { syncId: 'sync-b' }, { syncId: 'sync-c' }] } });
  const trig = await h.request('POST', '/v1/sequences/s/runs');
  await dead;
  const mid = (await h.request('GET', `/v1/sequence-runs/${trig.body.id}`)).body;
  t.equal(mid.status, 'running');
  t.equal(mid.currentStep, 2, 'killed during step 2');
  t.equal(crms.c.requests, 0);

  const config = loadConfig({ DATABASE_URL: h.databaseUrl, BACKHAUL_ENCRYPTION_KEY: h.bh.config.encryptionKey!, LOG_LEVEL: 'silent' });
  const worker = await startBackhaul({ config, api: false, worker: true, engine, staleAfterMs: 1500, sweepEveryMs: 300 });
  t.teardown(() => worker.close());
  const done = await waitForSequenceRun(h, trig.body.id);
  t.equal(done.status, 'succeeded', JSON.stringify(done));
  t.same(done.steps.map((s: any) => s.status), ['succeeded', 'succeeded', 'succeeded']);
  t.equal(crms.c.contacts.size, 100, 'step 3 ran after the restart');
  const firstC = order.indexOf('c');
  t.ok(firstC > order.lastIndexOf('b'), 'and only after step 2 finished');
  void ids;
});

t.test('GraphQL and REST agree: the same sequences and sequence runs, through the same service', async (t) => {
  const h = await startTestBackhaul(t); // no worker: the sequence run stays queued until cancelled
  const crm = await startFakeCrm();
  t.teardown(() => crm.close());
  const a = await setupSync(t, h, crm.url, { slug: 'one' });
  await setupSync(t, h, crm.url, { slug: 'two' });
  const gql = async (query: string, variables: Record<string, unknown> = {}) => {
    const r = await h.request('POST', '/graphql', { body: { query, variables } });
    t.equal(r.status, 200, r.text);
    return r.body;
  };
  const fields = 'id slug name enabled onFailure version createdAt updatedAt schedule { ... on CronSchedule { type expression timezone } ... on ManualSchedule { type } } steps { syncId syncSlug sync { slug } }';
  const created = await gql(`mutation($input: CreateSequenceInput!) { createSequence(input: $input) { ${fields} } }`, {
    input: { slug: 'gq', name: 'GQ', steps: [{ syncId: 'one' }, { syncId: 'two' }], schedule: { cron: { expression: '30 5 * * *' } }, onFailure: 'continue' },
  });
  t.equal(created.errors, undefined, JSON.stringify(created.errors));
  const seq = created.data.createSequence;
  const rest = (await h.request('GET', '/v1/sequences/gq')).body;
  const { steps: gSteps, ...gRest } = seq;
  const { steps: rSteps, ...rRest } = rest;
  t.same(gRest, rRest, 'the sequence reads the same in GraphQL and REST');
  t.same(gSteps.map((s: any) => ({ syncId: s.syncId, syncSlug: s.syncSlug })), rSteps);
  t.same(gSteps.map((s: any) => s.sync.slug), ['one', 'two']);

  const stale = await gql(`mutation { updateSequence(ref: "gq", input: { name: "x" }, expectedVersion: 9) { id } }`);
  t.equal(stale.errors?.[0]?.extensions?.code, 'version_mismatch');
  const upd = await gql(`mutation { updateSequence(ref: "gq", input: { onFailure: stop }, expectedVersion: 1) { version onFailure } }`);
  t.same(upd.data.updateSequence, { version: 2, onFailure: 'stop' });
  t.equal((await h.request('GET', '/v1/sequences/gq')).body.onFailure, 'stop', 'REST sees the GraphQL write');

  const trig = await gql(`mutation { triggerSequenceRun(sequenceRef: "gq") { created sequenceRun { id status steps { position syncId status runId } } } }`);
  t.equal(trig.data.triggerSequenceRun.created, true);
  const runId = trig.data.triggerSequenceRun.sequenceRun.id;
  const restRun = await h.request('POST', '/v1/sequences/gq/runs');
  t.equal(restRun.status, 200, 'REST finds the run GraphQL started');
  t.equal(restRun.body.id, runId);
  const q = await gql(`query($id: ID!) { sequenceRun(id: $id) { id sequenceId status trigger onFailure currentStep queuedAt startedAt finishedAt error { code } steps { position syncId runId status error { code } } sequence { slug } } node(id: $id) { ... on SequenceRun { id } } }`, { id: runId });
  const { sequence, ...gRun } = q.data.sequenceRun;
  t.same(gRun, { ...restRun.body }, 'the sequence run reads the same');
  t.equal(sequence.slug, 'gq');
  t.equal(q.data.node.id, runId, 'node() resolves a sequence run by its id');
  const listed = await gql(`{ sequences { nodes { slug runs { nodes { id } } } } }`);
  t.same(listed.data.sequences.nodes, [{ slug: 'gq', runs: { nodes: [{ id: runId }] } }]);
  // Full Relay connections (issue 16 item 8), as relay-compiler's @connection reads them: edges with cursors, both ends of pageInfo.
  const page = '{ hasNextPage hasPreviousPage startCursor endCursor }';
  const relay = await gql(`{ sequences(first: 1) { edges { cursor node { slug runs(first: 1) { edges { cursor node { id } } pageInfo ${page} } } } pageInfo ${page} } }`);
  t.equal(relay.errors, undefined, JSON.stringify(relay.errors));
  const [edge] = relay.data.sequences.edges;
  t.match(relay.data.sequences.pageInfo, { hasNextPage: false, hasPreviousPage: false, startCursor: edge.cursor, endCursor: edge.cursor });
  t.ok(edge.cursor, 'a sequence edge has a cursor');
  const [runEdge] = edge.node.runs.edges;
  t.equal(runEdge.node.id, runId);
  t.match(edge.node.runs.pageInfo, { hasNextPage: false, hasPreviousPage: false, startCursor: runEdge.cursor, endCursor: runEdge.cursor });
  t.ok(runEdge.cursor, 'a sequence run edge has a cursor');
  const next = await gql(`query($after: String) { sequences(first: 1, after: $after) { edges { cursor } pageInfo ${page} } }`, { after: edge.cursor });
  t.same(next.data.sequences, { edges: [], pageInfo: { hasNextPage: false, hasPreviousPage: true, startCursor: null, endCursor: null } }, 'after the last cursor: an empty page that has a previous one');

  const cancelled = await gql(`mutation($id: ID!) { cancelSequenceRun(id: $id) { status steps { status } error { code } } }`, { id: runId });
  t.same(cancelled.data.cancelSequenceRun, { status: 'cancelled', steps: [{ status: 'skipped' }, { status: 'skipped' }], error: { code: 'cancelled' } });
  t.equal((await h.request('GET', `/v1/sequence-runs/${runId}`)).body.status, 'cancelled');
  const again = await gql(`mutation($id: ID!) { cancelSequenceRun(id: $id) { status } }`, { id: runId });
  t.equal(again.errors?.[0]?.extensions?.code, 'run_finished');

  const foreignWs = await h.request('POST', '/v1/workspaces', { body: { slug: 'gq-other', name: 'Other' } });
  const r = await h.request('POST', '/graphql', { token: foreignWs.body.apiKey.token, body: { query: `{ sequenceRun(id: "${runId}") { id } sequence(ref: "gq") { id } }` } });
  t.same(r.body.data, { sequenceRun: null, sequence: null }, 'another workspace sees nothing');
  const del = await gql(`mutation { deleteSequence(ref: "gq") { deletedId } }`);
  t.equal(del.data.deleteSequence.deletedId, seq.id);
  void a;
});

t.test('a scheduled slot starts a sequence run (trigger schedule) and plans the next slot', async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: true, engine } });
  const { ids } = await threeSyncs(t, h, { rows: 10 });
  const created = await h.request('POST', '/v1/sequences', {
    body: { slug: 'hourly', name: 'Hourly', steps: [{ syncId: ids.a }, { syncId: ids.c }], schedule: { type: 'interval', everySeconds: 3600, anchor: '2026-01-01T00:15:00Z' } },
  });
  t.equal(created.status, 201, created.text);
  const db = postgres(h.databaseUrl, { max: 1, onnotice: () => {} });
  t.teardown(() => db.end());
  const key = `sequence-schedule:${created.body.id}`;
  const [planned] = await db`select run_at from graphile_worker.jobs where key = ${key}`;
  t.equal(new Date(planned.run_at).getUTCMinutes(), 15, 'the next slot is on the anchored grid');
  t.ok(new Date(planned.run_at).getTime() > Date.now(), 'in the future');
  // The slot comes now (its job made due, as graphile-worker would at run_at).
  await db`select graphile_worker.add_job('backhaul_sequence_schedule', json_build_object('sequenceId', ${created.body.id}::text), run_at => now(), job_key => ${key}, job_key_mode => 'replace')`;
  const deadline = Date.now() + 60_000;
  let listed: any[] = [];
  while (!listed.length && Date.now() < deadline) {
    listed = (await h.request('GET', '/v1/sequences/hourly/runs')).body.data;
    if (!listed.length) await new Promise((r) => setTimeout(r, 50));
  }
  t.equal(listed.length, 1, 'the slot started a sequence run');
  t.equal(listed[0].trigger, 'schedule');
  const done = await waitForSequenceRun(h, listed[0].id);
  t.equal(done.status, 'succeeded');
  const [next] = await db`select run_at from graphile_worker.jobs where key = ${key}`;
  t.ok(next && new Date(next.run_at).getTime() > Date.now() && new Date(next.run_at).getUTCMinutes() === 15, 'the next slot is planned on the grid');
});

t.test("a step whose sync is already running queues behind that run, and a trigger meanwhile joins the step's queued run; a disabled sync fails its step", async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: true, engine } });
  const { crms, ids } = await threeSyncs(t, h, { rows: 30 });
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let reached!: () => void;
  const arrived = new Promise<void>((r) => (reached = r));
  crms.a.onBatch = async () => {
    reached();
    await gate;
  };
  const before = await h.request('POST', `/v1/syncs/${ids.a}/runs`, { body: {} });
  t.equal(before.status, 202);
  await arrived; // sync a's own run is running
  await h.request('POST', '/v1/sequences', { body: { slug: 's', name: 'S', onFailure: 'continue', steps: [{ syncId: 'sync-a' }, { syncId: 'sync-b' }, { syncId: 'sync-c' }] } });
  t.equal((await h.request('PATCH', '/v1/syncs/sync-b', { body: { enabled: false } })).status, 200);
  const trig = await h.request('POST', '/v1/sequences/s/runs');
  const waiting = await waitForSequenceRun(h, trig.body.id, (r) => r.steps[0].runId !== null);
  t.not(waiting.steps[0].runId, before.body.id, 'the step queued a run of its own behind the running one');
  t.equal(waiting.steps[0].status, 'running');
  const joined = await h.request('POST', `/v1/syncs/${ids.a}/runs`, { body: {} });
  t.equal(joined.status, 200, 'a trigger of the sync meanwhile joins the queued step run');
  t.equal(joined.body.id, waiting.steps[0].runId);
  release();
  const done = await waitForSequenceRun(h, trig.body.id);
  t.same(done.steps.map((s: any) => s.status), ['succeeded', 'failed', 'succeeded']);
  t.match(done.steps[1], { runId: null, error: { code: 'sync_disabled' } }, 'the disabled sync fails its step without a run');
  const first = (await h.request('GET', `/v1/runs/${before.body.id}`)).body;
  const step = (await h.request('GET', `/v1/runs/${done.steps[0].runId}`)).body;
  t.ok(step.startedAt >= first.finishedAt, 'the step ran after the run that was already running');
  t.equal(crms.c.contacts.size, 30);
});
