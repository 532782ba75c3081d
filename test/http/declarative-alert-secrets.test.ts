import t from 'tap';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { newWorkspace, ok } from '../helpers/http-fixtures.ts';
import { startReceiver } from '../fakes/receiver.ts';

// Alert channels' secrets as `{ env }` references, like connections': stored and exported as the
// reference (a bundle names the variable, never the value), applied to a fresh workspace and again
// as a no-op, a changed reference detected by fingerprint, and the value read from Backhaul's
// environment when a message is sent (a channel test here); an unset variable is a 422.

const VAR = `BH_TEST_ALERT_SLACK_${process.pid}`;

t.test('alert channel secrets as { env } references: export, apply, no-op, drift, resolved when sent', async (t) => {
  const slack = await startReceiver((r) => (r.path === '/services/T1/B1/ENVSECRET' && typeof r.body?.text === 'string' ? { status: 200, body: 'ok' } : { status: 400, body: 'invalid_payload' }));
  t.teardown(() => slack.close());
  process.env[VAR] = `${slack.url}/services/T1/B1/ENVSECRET`;
  t.teardown(() => {
    delete process.env[VAR];
  });
  const h = await startTestBackhaul(t);

  const created = await ok(h.request('POST', '/v1/alert-channels', { body: { slug: 'team', name: 'Team', type: 'slack', secrets: { webhookUrl: { env: VAR } } } }), 201);
  t.same(created.secretNames, ['webhookUrl']);
  await ok(h.request('POST', '/v1/alert-channels', { body: { slug: 'hook', name: 'Hook', type: 'webhook', config: { url: 'http://127.0.0.1:9/a' }, secrets: { signingSecret: 'whsec_' + Buffer.alloc(24, 7).toString('base64') } } }), 201);
  const refused = await h.request('POST', '/v1/alert-channels', { body: { slug: 'evil', name: 'Evil', type: 'slack', secrets: { webhookUrl: { env: 'BACKHAUL_ENCRYPTION_KEY' } } } });
  t.equal(refused.status, 422, refused.text);
  t.same(refused.body.errors.map((e: any) => e.path), ['/secrets/webhookUrl/env']);

  // Sent with the variable's value.
  const tested = await ok(h.request('POST', '/v1/alert-channels/team/test'), 200);
  t.equal(tested.ok, true, JSON.stringify(tested));
  t.equal(slack.received.length, 1, 'the message went to the URL the variable holds');

  // Export: the reference, never a value (the webhook channel's plain secret is not exported).
  const exported = await ok(h.request('GET', '/v1/export'), 200);
  t.same(exported.alertChannels.map((c: any) => [c.slug, c.secrets]), [['hook', undefined], ['team', { webhookUrl: { env: VAR } }]]);
  t.notOk(JSON.stringify(exported).includes('ENVSECRET'), 'no value exported');
  t.same((await ok(h.request('POST', '/v1/plan', { body: exported }), 200)).changes, [], 'the same workspace: nothing to do');

  // A fresh workspace: created with the reference; a second apply changes nothing.
  const ws = await newWorkspace(h, 'decl-alert');
  const fresh = { ...exported, alertChannels: exported.alertChannels.filter((c: any) => c.slug === 'team') };
  const plan = await ok(h.request('POST', '/v1/plan', { body: fresh, token: ws.token }), 200);
  t.same(plan.changes.map((c: any) => [c.action, c.kind, c.slug, c.fields.find((f: any) => f.field === 'secrets.webhookUrl')]), [['create', 'alertChannel', 'team', { field: 'secrets.webhookUrl', secret: true }]]);
  await ok(h.request('POST', '/v1/apply', { body: fresh, token: ws.token, headers: { 'if-match': plan.planHash } }), 200);
  const v1 = (await ok(h.request('GET', '/v1/alert-channels/team', { token: ws.token }), 200)).version;
  t.same((await ok(h.request('POST', '/v1/apply', { body: fresh, token: ws.token }), 200)).applied, [], 'second apply: nothing');
  t.equal((await ok(h.request('GET', '/v1/alert-channels/team', { token: ws.token }), 200)).version, v1, 'no version bump');
  t.equal((await ok(h.request('POST', '/v1/alert-channels/team/test', { token: ws.token }), 200)).ok, true, 'the fresh workspace sends with the variable too');

  // Another variable in the bundle: one update of that secret, without values.
  const other = structuredClone(fresh);
  other.alertChannels[0].secrets.webhookUrl = { env: `${VAR}_UNSET` };
  const drift = await ok(h.request('POST', '/v1/plan', { body: other, token: ws.token }), 200);
  t.same(drift.changes.map((c: any) => [c.action, c.slug, c.fields]), [['update', 'team', [{ field: 'secrets.webhookUrl', secret: true }]]]);
  await ok(h.request('POST', '/v1/apply', { body: other, token: ws.token }), 200);
  // That variable is unset: the channel test says so (422), not a server error.
  const unset = await h.request('POST', '/v1/alert-channels/team/test', { token: ws.token });
  t.equal(unset.status, 422, unset.text);
  t.equal(unset.body.code, 'secret_env_missing');
});
