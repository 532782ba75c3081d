import t from 'tap';
import postgres from 'postgres';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { startFakeCrm } from '../fakes/crm.ts';
import { runToEnd, setupSync, waitForJobsDone } from '../helpers/sync-setup.ts';
import { realClock, type Clock } from '../../src/engine/rate-limiter.ts';
import { startReceiver, verifyWebhook, type Received } from '../fakes/receiver.ts';

const engine = { retryBaseMs: 5, retryMaxMs: 40, heartbeatMs: 200 };
const badAge = (row: Record<string, unknown>) => (Number(row.age) === 33 ? `age 33 is not allowed for ${row.email}` : undefined);
const ofType = (type: string, path?: string) => (r: Received) => r.body?.type === type && (path === undefined || r.path === path);

t.test('signed run.started / run.completed with per-row errors, to endpoints and to the trigger callbackUrl; rotation', async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: true, engine } });
  const crm = await startFakeCrm({ reject: badAge });
  const rx = await startReceiver();
  t.teardown(() => crm.close());
  t.teardown(() => rx.close());
  const { src, syncId } = await setupSync(t, h, crm.url, { rows: 120 });
  const rejectedIds = (await src<{ id: number }[]>`select id from src.people where age = 33 order by id`).map((r) => String(r.id));

  const created = await h.request('POST', '/v1/webhook-endpoints', { body: { slug: 'ops', name: 'Ops', url: `${rx.url}/hook`, events: ['run.started', 'run.completed'] } });
  t.equal(created.status, 201, JSON.stringify(created.body));
  const secret: string = created.body.secret;
  t.match(secret, /^whsec_[A-Za-z0-9+/]+=*$/, 'a generated whsec_ secret, shown on create');
  const again = await h.request('GET', '/v1/webhook-endpoints/ops');
  t.equal(again.body.secret, undefined, 'and never again');
  t.same(again.body.events, ['run.started', 'run.completed']);

  const cb = await h.request('POST', '/v1/callback-secret', { body: {} });
  t.equal(cb.status, 200);
  t.match(cb.body.secret, /^whsec_/);
  t.equal((await h.request('GET', '/v1/callback-secret')).body.secret, undefined);

  const run = await runToEnd(h, syncId, { callbackUrl: `${rx.url}/callback` });
  t.equal(run.status, 'partially_succeeded');
  await rx.waitFor((all) => all.some(ofType('run.completed', '/hook')) && all.some(ofType('run.completed', '/callback')) && all.some(ofType('run.started', '/hook')));
  t.notOk(rx.received.some(ofType('run.started', '/callback')), 'the callback gets run.completed only');

  const started = rx.received.find(ofType('run.started', '/hook'))!;
  t.ok(verifyWebhook(secret, started.headers, started.raw), 'run.started verifies with the endpoint secret');
  t.equal(started.body.data.run.id, run.id);

  const hook = rx.received.find(ofType('run.completed', '/hook'))!;
  const call = rx.received.find(ofType('run.completed', '/callback'))!;
  t.ok(verifyWebhook(secret, hook.headers, hook.raw), 'endpoint delivery verifies with the endpoint secret');
  t.notOk(verifyWebhook(cb.body.secret, hook.headers, hook.raw), 'and not with another secret');
  t.ok(verifyWebhook(cb.body.secret, call.headers, call.raw), 'callback verifies with the callback secret');
  t.notOk(verifyWebhook(secret, hook.headers, hook.raw.replace('partially_succeeded', 'succeeded')), 'a tampered body does not verify');
  t.match(hook.headers['webhook-id'], /^msg_/);

  const data = hook.body.data;
  t.equal(data.run.id, run.id);
  t.equal(data.run.status, 'partially_succeeded');
  t.same(data.run.counts, run.counts, 'the run with its counts');
  t.equal(data.failedRowCount, rejectedIds.length);
  t.same(data.failedRows.map((r: any) => r.primaryKey).sort(), [...rejectedIds].sort(), 'every rejected row');
  t.ok(data.failedRows.every((r: any) => r.operation === 'insert' && r.status === 'rejected' && r.code && /age 33 is not allowed/.test(r.message)), "with operation, code and the destination's message");
  t.equal(data.failedRowsTruncated, false);
  t.equal(data.recordsUrl, `${h.url}/v1/runs/${run.id}/records`);
  const listed = await fetch(data.failedRecordsUrls.rejected, { headers: { authorization: `Bearer ${h.token}` } }).then((r) => r.json() as Promise<any>);
  t.equal(listed.data.length, rejectedIds.length, 'the records URL lists the full set');

  // Deliveries are listed with their attempts; the run lists both of its deliveries.
  // The receiver answered before the attempt was recorded: wait for the record.
  let dels = await h.request('GET', '/v1/webhook-endpoints/ops/deliveries?eventType=run.completed');
  for (let i = 0; i < 600 && dels.body.data[0]?.status === 'pending'; i++) {
    await new Promise((r) => setTimeout(r, 50));
    dels = await h.request('GET', '/v1/webhook-endpoints/ops/deliveries?eventType=run.completed');
  }
  t.equal(dels.status, 200);
  t.equal(dels.body.data.length, 1);
  const d = dels.body.data[0];
  t.equal(d.status, 'succeeded');
  t.equal(d.attempts.length, 1);
  t.equal(d.attempts[0].statusCode, 200);
  t.equal(d.attempts[0].responseExcerpt, 'ok');
  t.equal(d.messageId, hook.headers['webhook-id']);
  let runDels = await h.request('GET', `/v1/runs/${run.id}/deliveries`);
  for (let i = 0; i < 600 && runDels.body.data.length < 3; i++) {
    await new Promise((r) => setTimeout(r, 50));
    runDels = await h.request('GET', `/v1/runs/${run.id}/deliveries`);
  }
  t.same(runDels.body.data.map((x: any) => x.target).sort(), ['callback', 'endpoint', 'endpoint']);

  // Rotation with a grace period: both secrets sign; a given secret is accepted.
  const given = `whsec_${Buffer.alloc(32, 7).toString('base64')}`;
  const rot = await h.request('POST', '/v1/webhook-endpoints/ops/rotate-secret', { body: { secret: given, gracePeriodSeconds: 3600 } });
  t.equal(rot.status, 200, JSON.stringify(rot.body));
  t.equal(rot.body.secret, given);
  t.ok(rot.body.previousSecretExpiresAt);
  rx.received.length = 0;
  await runToEnd(h, syncId);
  await rx.waitFor((all) => all.some(ofType('run.completed', '/hook')));
  let msg = rx.received.find(ofType('run.completed', '/hook'))!;
  t.equal(String(msg.headers['webhook-signature']).split(' ').length, 2, 'two signatures during the grace period');
  t.ok(verifyWebhook(given, msg.headers, msg.raw), 'verifies with the new secret');
  t.ok(verifyWebhook(secret, msg.headers, msg.raw), 'and with the old one');

  // Without a grace period, only the new secret signs.
  const rot2 = await h.request('POST', '/v1/webhook-endpoints/ops/rotate-secret', { body: { gracePeriodSeconds: 0 } });
  t.equal(rot2.body.previousSecretExpiresAt, null);
  rx.received.length = 0;
  await runToEnd(h, syncId);
  await rx.waitFor((all) => all.some(ofType('run.completed', '/hook')));
  msg = rx.received.find(ofType('run.completed', '/hook'))!;
  t.ok(verifyWebhook(rot2.body.secret, msg.headers, msg.raw));
  t.notOk(verifyWebhook(given, msg.headers, msg.raw), 'the previous secret no longer verifies');

  // Validation: problem+json with stable codes, nothing half-applied.
  const bad = await h.request('POST', '/v1/webhook-endpoints', { body: { slug: 'x', name: 'X', url: 'http://169.254.169.254/latest' } });
  t.equal(bad.status, 422);
  t.equal(bad.body.code, 'address_not_allowed');
  const badSync = await h.request('POST', '/v1/webhook-endpoints', { body: { slug: 'y', name: 'Y', url: rx.url, syncIds: ['nope'] } });
  t.equal(badSync.status, 422);
  t.equal(badSync.body.code, 'invalid_reference');
  t.equal(badSync.body.errors[0].path, '/syncIds/0');
  const badEvent = await h.request('POST', '/v1/webhook-endpoints', { body: { slug: 'z', name: 'Z', url: rx.url, events: ['run.exploded'] } });
  t.equal(badEvent.status, 400);
  t.equal((await h.request('GET', '/v1/webhook-endpoints')).body.data.length, 1, 'no endpoint was created by the failures');
  const badSecret = await h.request('POST', '/v1/webhook-endpoints/ops/rotate-secret', { body: { secret: 'whsec_short' } });
  t.equal(badSecret.status, 400);
  t.equal((await h.request('GET', '/v1/webhook-endpoints/nope/deliveries')).status, 404);
});

t.test('a sync filter and an event filter select what an endpoint receives; PUT by slug creates', async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: true, engine } });
  const crm = await startFakeCrm();
  const rx = await startReceiver();
  t.teardown(() => crm.close());
  t.teardown(() => rx.close());
  const a = await setupSync(t, h, crm.url, { rows: 3, slug: 'alpha' });
  const put = await h.request('PUT', '/v1/webhook-endpoints/only-beta', { body: { name: 'Beta only', url: `${rx.url}/beta`, syncIds: ['beta'], events: ['run.completed'] } }).catch(() => null);
  t.equal(put?.status, 422, 'unknown sync slug');
  const b = await setupSync(t, h, crm.url, { slug: 'beta' }); // same source table
  const put2 = await h.request('PUT', '/v1/webhook-endpoints/only-beta', { body: { name: 'Beta only', url: `${rx.url}/beta`, syncIds: ['beta'], events: ['run.completed'] } });
  t.equal(put2.status, 201);
  t.same(put2.body.syncIds, [b.syncId], 'stored as ids');
  t.ok(put2.body.secret);
  await runToEnd(h, a.syncId);
  await runToEnd(h, b.syncId);
  await rx.waitFor((all) => all.length >= 1);
  await waitForJobsDone(h); // both runs' events were all delivered
  t.equal(rx.received.length, 1, 'one message: beta, run.completed');
  t.equal(rx.received[0].body.data.sync.id, b.syncId);
  t.equal(rx.received[0].body.type, 'run.completed');
});

t.test('failed deliveries are retried on the schedule (run_at from the clock), 410 disables the endpoint, redelivery', async (t) => {
  let offset = 0;
  const clock: Clock = { now: () => Date.now() + offset, sleep: realClock.sleep };
  const h = await startTestBackhaul(t, { start: { worker: true, engine: { ...engine, clock } } });
  const crm = await startFakeCrm();
  let status = 503;
  const rx = await startReceiver(() => ({ status, body: status === 503 ? 'down for maintenance' : 'ok' }));
  t.teardown(() => crm.close());
  t.teardown(() => rx.close());
  const db = postgres(h.databaseUrl, { max: 1, onnotice: () => {} });
  t.teardown(() => db.end());
  const { syncId } = await setupSync(t, h, crm.url, { rows: 2 });
  const ep = await h.request('POST', '/v1/webhook-endpoints', { body: { slug: 'flaky', name: 'Flaky', url: `${rx.url}/flaky`, events: ['run.completed'] } });
  offset = 1_000_000; // the clock is an hour ahead of the database: run_at must come from the clock

  await runToEnd(h, syncId);
  const schedule = [5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 86_400_000];
  const delivery = async () => (await h.request('GET', '/v1/webhook-endpoints/flaky/deliveries')).body.data[0];
  const waitAttempts = async (n: number) => {
    const deadline = Date.now() + 20_000;
    for (;;) {
      const d = await delivery();
      if (d && d.attempts.length >= n && (d.status !== 'pending' || d.nextAttemptAt)) return d;
      if (Date.now() > deadline) throw new Error(`delivery did not reach ${n} attempts: ${JSON.stringify(d)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  let d: any;
  for (let i = 0; i < schedule.length; i++) {
    d = await waitAttempts(i + 1);
    const last = d.attempts[i];
    t.equal(d.status, 'pending');
    t.equal(last.statusCode, 503);
    t.equal(last.responseExcerpt, 'down for maintenance');
    t.equal(Date.parse(d.nextAttemptAt) - Date.parse(last.at), schedule[i], `retry ${i + 1} after ${schedule[i] / 1000} s`);
    const [job] = await db<{ run_at: Date }[]>`select run_at from graphile_worker.jobs where key = ${`whd:${d.id}`}`;
    t.equal(job.run_at.getTime(), Date.parse(d.nextAttemptAt), "the job's run_at is the next attempt");
    t.equal(Date.parse(last.at) - Date.now() > 900_000, true, "computed from the clock, not the database's time");
    // Time passes: make the job due now.
    await db`update graphile_worker._private_jobs set run_at = now() where key = ${`whd:${d.id}`}`;
  }
  d = await waitAttempts(schedule.length + 1);
  t.equal(d.status, 'failed', 'gives up after the last retry');
  t.equal(d.attempts.length, 8);
  t.equal(d.nextAttemptAt, null);
  t.equal((await db`select 1 from graphile_worker.jobs where key = ${`whd:${d.id}`}`).length, 0, 'no job left');
  t.equal(rx.received.length, 8);
  t.ok(rx.received.every((r) => r.headers['webhook-id'] === rx.received[0].headers['webhook-id']), 'the same webhook-id on every attempt');

  // 410 Gone disables the endpoint.
  status = 410;
  await runToEnd(h, syncId);
  const deadline = Date.now() + 20_000;
  let epNow: any;
  do {
    await new Promise((r) => setTimeout(r, 50));
    epNow = (await h.request('GET', '/v1/webhook-endpoints/flaky')).body;
  } while (epNow.enabled && Date.now() < deadline);
  t.equal(epNow.enabled, false, '410 disables the endpoint');
  t.match(epNow.disabledReason, /410/);
  const gone = await delivery();
  t.equal(gone.status, 'failed');
  t.equal(gone.attempts.length, 1, 'no retries after 410');
  const received = rx.received.length;
  await runToEnd(h, syncId);
  await waitForJobsDone(h); // the run's events were all delivered
  t.equal(rx.received.length, received, 'a disabled endpoint receives nothing');

  // Redelivery: refused while disabled, then the same message again once enabled.
  const refused = await h.request('POST', `/v1/webhook-endpoints/flaky/deliveries/${d.id}/redeliver`);
  t.equal(refused.status, 422);
  t.equal(refused.body.code, 'endpoint_disabled');
  status = 200;
  const en = await h.request('PATCH', `/v1/webhook-endpoints/${ep.body.id}`, { body: { enabled: true } });
  t.equal(en.body.enabled, true);
  t.equal(en.body.disabledReason, null);
  const re = await h.request('POST', `/v1/webhook-endpoints/flaky/deliveries/${d.id}/redeliver`);
  t.equal(re.status, 202, JSON.stringify(re.body));
  t.equal(re.body.redeliveryOf, d.id);
  t.equal(re.body.messageId, d.messageId);
  const got = await rx.waitFor((all) => all.length > received && all[all.length - 1].headers['webhook-id'] === d.messageId);
  t.equal(got[got.length - 1].raw, JSON.stringify(d.payload), 'the same body');
  let redelivered: any;
  for (let i = 0; i < 600; i++) {
    redelivered = (await h.request('GET', `/v1/webhook-endpoints/flaky/deliveries/${re.body.id}`)).body;
    if (redelivered.status !== 'pending') break;
    await new Promise((r) => setTimeout(r, 50));
  }
  t.equal(redelivered.status, 'succeeded');
  t.equal((await h.request('POST', `/v1/webhook-endpoints/flaky/deliveries/whd_nope/redeliver`)).status, 404);
});

t.test('a dead endpoint does not slow runs down', async (t) => {
  // The longest deadline there is: if runs waited for their webhooks, they would end only after it.
  const h = await startTestBackhaul(t, { start: { worker: true, engine }, env: { BACKHAUL_WEBHOOK_TIMEOUT_MS: '60000' } });
  const crm = await startFakeCrm();
  t.teardown(() => crm.close());
  // Accepts the connection and never answers.
  const rx = await startReceiver();
  rx.respond = () => null;
  t.teardown(() => rx.close());
  const { syncId } = await setupSync(t, h, crm.url, { rows: 5 });
  await h.request('POST', '/v1/webhook-endpoints', { body: { slug: 'dead', name: 'Dead', url: `${rx.url}/dead` } });
  const r1 = await runToEnd(h, syncId);
  const r2 = await runToEnd(h, syncId, { fullResync: true });
  t.equal(r1.status, 'succeeded');
  t.equal(r2.status, 'succeeded');
  await rx.waitFor((all) => all.length >= 1);
  const dels = (await h.request('GET', '/v1/webhook-endpoints/dead/deliveries')).body.data;
  t.ok(dels.length >= 1 && dels.every((d: any) => d.status === 'pending' && d.attempts.length === 0), 'both runs ended while the first delivery still hangs (no attempt has ended)');
  await rx.close(); // ends the hanging request, so the worker can stop
});
