import t from 'tap';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { startFakeCrm } from '../fakes/crm.ts';
import { runToEnd, setupSync, waitForJobsDone } from '../helpers/sync-setup.ts';
import { startReceiver, verifyWebhook, type Received } from '../fakes/receiver.ts';

const engine = { retryBaseMs: 5, retryMaxMs: 40, heartbeatMs: 200 };

/** A local PagerDuty Events API v2: POST /v2/enqueue, 202 {status, message, dedup_key}; 400 on a malformed event. */
function pagerDutyRespond(r: Received) {
  const b = r.body;
  const ok =
    r.path === '/v2/enqueue' &&
    typeof b?.routing_key === 'string' &&
    b.routing_key.length > 0 &&
    ['trigger', 'acknowledge', 'resolve'].includes(b.event_action) &&
    (b.event_action !== 'trigger' || (b.payload?.summary && b.payload?.source && ['critical', 'error', 'warning', 'info'].includes(b.payload?.severity)));
  if (!ok) return { status: 400, body: JSON.stringify({ status: 'invalid event', message: 'Event object is invalid' }) };
  return { status: 202, body: JSON.stringify({ status: 'success', message: 'Event processed', dedup_key: b.dedup_key }) };
}

t.test('Slack and PagerDuty get one alert for repeated failures and one recovery; channel tests; alert events', async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: true, engine } });
  const crm = await startFakeCrm();
  const slack = await startReceiver((r) => (r.path === '/services/T000/B000/XXXX' && typeof r.body?.text === 'string' ? { status: 200, body: 'ok' } : { status: 400, body: 'invalid_payload' }));
  const pd = await startReceiver(pagerDutyRespond);
  const hooks = await startReceiver();
  t.teardown(() => crm.close());
  t.teardown(() => slack.close());
  t.teardown(() => pd.close());
  t.teardown(() => hooks.close());
  const { syncId } = await setupSync(t, h, crm.url, { rows: 10, delivery: { maxRetries: 0 } });

  const sl = await h.request('POST', '/v1/alert-channels', { body: { slug: 'team-slack', name: 'Team Slack', type: 'slack', secrets: { webhookUrl: `${slack.url}/services/T000/B000/XXXX` } } });
  t.equal(sl.status, 201, JSON.stringify(sl.body));
  t.same(sl.body.secretNames, ['webhookUrl']);
  t.notOk(JSON.stringify(sl.body).includes('XXXX'), 'the webhook URL is a secret: never returned');
  const pg = await h.request('POST', '/v1/alert-channels', {
    body: { slug: 'oncall', name: 'On call', type: 'pagerduty', config: { eventsUrl: `${pd.url}/v2/enqueue`, severity: 'critical' }, secrets: { routingKey: 'R0UT1NGKEY' } },
  });
  t.equal(pg.status, 201, JSON.stringify(pg.body));
  t.equal(pg.body.config.eventsUrl, `${pd.url}/v2/enqueue`);
  const dflt = await h.request('POST', '/v1/alert-channels', { body: { slug: 'pd-default', name: 'PD', type: 'pagerduty', secrets: { routingKey: 'k' } } });
  t.equal(dflt.body.config.eventsUrl, 'https://events.pagerduty.com/v2/enqueue', 'the public Events API v2 by default');

  // Settings that do not fit the type: 422 naming the field; nothing created.
  const bad = await h.request('POST', '/v1/alert-channels', { body: { slug: 'bad', name: 'Bad', type: 'slack', secrets: { routingKey: 'x' } } });
  t.equal(bad.status, 422);
  t.equal(bad.body.code, 'invalid_channel');
  t.same(bad.body.errors.map((e: any) => e.path).sort(), ['/secrets/routingKey', '/secrets/webhookUrl']);
  t.equal((await h.request('GET', '/v1/alert-channels/bad')).status, 404);

  // Channel tests send a real message; PagerDuty's test triggers and resolves the same key.
  const ts = await h.request('POST', '/v1/alert-channels/team-slack/test');
  t.equal(ts.status, 200);
  t.equal(ts.body.ok, true, JSON.stringify(ts.body));
  t.match(slack.received[0].body, { text: /Test/, blocks: [{ type: 'section' }] });
  const tp = await h.request('POST', '/v1/alert-channels/oncall/test');
  t.equal(tp.body.ok, true, JSON.stringify(tp.body));
  t.equal(tp.body.statusCode, 202);
  t.same(pd.received.map((r) => r.body.event_action), ['trigger', 'resolve']);
  t.equal(pd.received[0].body.dedup_key, pd.received[1].body.dedup_key);
  const broken = await h.request('POST', '/v1/alert-channels', { body: { slug: 'broken', name: 'Broken', type: 'slack', secrets: { webhookUrl: `${slack.url}/wrong` } } });
  const tb = await h.request('POST', `/v1/alert-channels/${broken.body.id}/test`);
  t.equal(tb.body.ok, false);
  t.equal(tb.body.error.code, 'http_400');
  slack.received.length = 0;
  pd.received.length = 0;

  const ep = await h.request('POST', '/v1/webhook-endpoints', { body: { slug: 'alerts', name: 'Alerts', url: hooks.url, events: ['alert.raised', 'alert.resolved'] } });
  const patched = await h.request('PATCH', `/v1/syncs/${syncId}`, { body: { alerts: { channelIds: [sl.body.id, 'oncall'], onFailure: true } } });
  t.equal(patched.status, 200, JSON.stringify(patched.body));

  // Three failures in a row: one alert on each channel.
  crm.faults = { p5xx: 1 };
  for (let i = 0; i < 3; i++) t.equal((await runToEnd(h, syncId)).status, 'failed');
  await slack.waitFor((all) => all.length >= 1);
  await pd.waitFor((all) => all.length >= 1);
  await waitForJobsDone(h); // every alert the runs caused has been sent
  t.equal(slack.received.length, 1, 'one Slack message for three failures');
  t.equal(pd.received.length, 1, 'one PagerDuty event');
  t.match(slack.received[0].body.text, /Alert.*failed/);
  const trig = pd.received[0].body;
  t.equal(trig.event_action, 'trigger');
  t.equal(trig.routing_key, 'R0UT1NGKEY');
  t.equal(trig.payload.severity, 'critical');
  t.equal(trig.payload.source, 'backhaul');
  t.match(trig.payload.summary, /failed/);
  const open = await h.request('GET', `/v1/alerts?status=open&syncId=${syncId}`);
  t.equal(open.body.data.length, 1);
  t.equal(open.body.data[0].kind, 'run_failed');

  // A healthy run resolves it, once, with the same dedup key.
  crm.faults = {};
  t.equal((await runToEnd(h, syncId)).status, 'succeeded');
  await slack.waitFor((all) => all.length >= 2);
  await pd.waitFor((all) => all.length >= 2);
  await runToEnd(h, syncId);
  await waitForJobsDone(h); // every alert the runs caused has been sent
  t.equal(slack.received.length, 2);
  t.equal(pd.received.length, 2);
  t.match(slack.received[1].body.text, /Recovered/);
  t.equal(pd.received[1].body.event_action, 'resolve');
  t.equal(pd.received[1].body.dedup_key, trig.dedup_key, 'resolve uses the trigger dedup_key');
  const resolved = await h.request('GET', `/v1/alerts?syncId=${syncId}`);
  t.equal(resolved.body.data[0].status, 'resolved');
  t.ok(resolved.body.data[0].resolvedRunId);

  // Webhook endpoints subscribed to alert events got alert.raised then alert.resolved, signed.
  await hooks.waitFor((all) => all.length >= 2);
  t.same(hooks.received.map((r) => r.body.type), ['alert.raised', 'alert.resolved']);
  t.ok(hooks.received.every((r) => verifyWebhook(ep.body.secret, r.headers, r.raw)));
  t.equal(hooks.received[0].body.data.alert.kind, 'run_failed');

  // A channel used by a sync cannot be deleted.
  const del = await h.request('DELETE', '/v1/alert-channels/oncall');
  t.equal(del.status, 409);
  t.equal(del.body.code, 'resource_in_use');
  t.equal((await h.request('DELETE', '/v1/alert-channels/pd-default')).status, 204);
});

t.test('row-failure percentage, slow runs and consecutive failures', async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: true, engine } });
  const crm = await startFakeCrm({ reject: (row) => (Number(row.age) % 2 === 0 ? 'even ages are refused' : undefined) });
  const rx = await startReceiver();
  t.teardown(() => crm.close());
  t.teardown(() => rx.close());
  const { syncId } = await setupSync(t, h, crm.url, { rows: 20, delivery: { maxRetries: 0 } });
  const ch = await h.request('PUT', '/v1/alert-channels/hook', { body: { name: 'Hook', type: 'webhook', config: { url: `${rx.url}/alerts` } } });
  t.equal(ch.status, 201, JSON.stringify(ch.body));
  await h.request('PATCH', `/v1/syncs/${syncId}`, { body: { alerts: { channelIds: ['hook'], onFailure: false, rowFailurePercent: 10, consecutiveFailures: 2 } } });

  const r1 = await runToEnd(h, syncId);
  t.equal(r1.status, 'partially_succeeded');
  await rx.waitFor((all) => all.length >= 1);
  t.equal(rx.received[0].body.type, 'alert.raised');
  t.equal(rx.received[0].body.data.alert.kind, 'row_failures');
  t.match(rx.received[0].body.data.alert.summary, /50\.0% of rows/);

  // Two failures in a row: consecutive_failures (row_failures is not judged on failed runs).
  crm.faults = { p5xx: 1 };
  await runToEnd(h, syncId);
  await waitForJobsDone(h); // every alert the runs caused has been sent
  t.equal(rx.received.length, 1, 'one failure is not yet two in a row');
  await runToEnd(h, syncId);
  await rx.waitFor((all) => all.length >= 2);
  t.equal(rx.received[1].body.data.alert.kind, 'consecutive_failures');

  // Healthy: both resolve.
  crm.faults = {};
  const ok = await runToEnd(h, syncId, { fullResync: true });
  t.equal(ok.status, 'succeeded');
  await rx.waitFor((all) => all.length >= 4);
  t.same(rx.received.slice(2).map((r) => `${r.body.type}:${r.body.data.alert.kind}`).sort(), ['alert.resolved:consecutive_failures', 'alert.resolved:row_failures']);

  // Slow run: a limit of 1 s and a destination that takes longer.
  await h.request('PATCH', `/v1/syncs/${syncId}`, { body: { alerts: { maxDurationSeconds: 1, rowFailurePercent: null, consecutiveFailures: null } } });
  crm.faults = { delayMs: 1600 };
  await runToEnd(h, syncId, { fullResync: true });
  await rx.waitFor((all) => all.length >= 5);
  t.equal(rx.received[4].body.data.alert.kind, 'slow_run');
});
