import t from 'tap';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { httpConnection, newKey, ok, pgConnection, PROBLEM_TYPE } from '../helpers/http-fixtures.ts';
import { startReceiver } from '../fakes/receiver.ts';
import { startPgCapture } from '../fakes/pg-capture.ts';

// Secrets are write-only, but a key that can write could once point a connection at a server of
// its own and have `/test` (read scope) send the secret there. Changing where secrets are sent
// now requires sending them again in the same request; these tests play the attacker with a
// write key against connections and alert channels an admin made.

const TOKEN = 'tok-admin-only-3d9f1c7a5b';
const PASSWORD = 'pw-admin-only-8e2a6c4b1d';
const ROUTING = 'R0UT1NGKEY-admin-only-77aa';

t.test('re-pointing secrets', async (t) => {
  const h = await startTestBackhaul(t);
  const writer = await newKey(h, ['write']);
  const reader = await newKey(h, ['read']);
  const capture = await startReceiver();
  const pgCap = await startPgCapture();
  t.teardown(() => capture.close());
  t.teardown(() => pgCap.close());
  const asWriter = (method: string, path: string, body?: unknown) => h.request(method, path, { body, token: writer.token });
  const leaked = () => [...capture.received.map((r) => JSON.stringify(r.headers) + r.raw), ...pgCap.passwords].filter((s) => s.includes(TOKEN) || s.includes(PASSWORD));

  const expect422 = async (t: any, res: Promise<{ status: number; headers: Headers; body: any }>, names: string[], fields: string[], _why?: string) => {
    const r = await res;
    t.equal(r.status, 422, `422: ${JSON.stringify(r.body)}`);
    t.equal(r.headers.get('content-type'), PROBLEM_TYPE);
    t.equal(r.body.code, 'secrets_required');
    t.same(r.body.secretNames, names);
    t.same(r.body.changedFields, fields);
    t.same(r.body.errors.map((e: { path: string }) => e.path), names.map((n) => `/secrets/${n}`));
  };

  await t.test('HTTP destination: baseUrl', async (t) => {
    const conn = await ok(h.request('POST', '/v1/connections', { body: httpConnection('crm-a', { config: { ...httpConnection('x').config, auth: { type: 'bearer' } }, secrets: { token: TOKEN } }) }));
    await expect422(t, asWriter('PATCH', `/v1/connections/${conn.id}`, { config: { baseUrl: `${capture.url}/steal` } }), ['token'], ['/config/baseUrl']);
    const body = { ...httpConnection('crm-a'), slug: undefined, config: { ...httpConnection('x').config, baseUrl: `${capture.url}/steal`, auth: { type: 'bearer' } } };
    await expect422(t, asWriter('PUT', `/v1/connections/${conn.id}`, body), ['token'], ['/config/baseUrl']);
    const after = await ok(h.request('GET', `/v1/connections/${conn.id}`), 200);
    t.equal(after.config.baseUrl, 'http://127.0.0.1:9/api', 'nothing half-applied');
    t.equal(after.version, conn.version);
    const tested = await h.request('POST', `/v1/connections/${conn.id}/test`, { token: reader.token });
    t.equal(tested.status, 200);
    // Re-pointing with a value of one's own is allowed: the admin's token is gone, not sent.
    const mine = await asWriter('PATCH', `/v1/connections/${conn.id}`, { config: { baseUrl: `${capture.url}/mine` }, secrets: { token: 'writer-own-token-1234' } });
    t.equal(mine.status, 200);
    await h.request('POST', `/v1/connections/${conn.id}/test`, { token: reader.token });
    await capture.waitFor((all) => all.some((r) => r.path.startsWith('/mine')));
    // Changes that do not move the secrets need nothing.
    t.equal((await asWriter('PATCH', `/v1/connections/${conn.id}`, { name: 'Renamed', config: { headers: { 'x-team': 'a' }, timeoutMs: 5000 } })).status, 200);
  });

  await t.test('HTTP destination: OAuth tokenUrl and several secrets', async (t) => {
    const cfg = { ...httpConnection('x').config, auth: { type: 'oauth2_client_credentials', tokenUrl: 'http://127.0.0.1:9/oauth/token', clientId: 'c1' } };
    const conn = await ok(h.request('POST', '/v1/connections', { body: httpConnection('crm-b', { config: cfg, secrets: { clientSecret: TOKEN, headerValue: { env: 'SOME_VAR' } } }) }));
    await expect422(t, asWriter('PATCH', `/v1/connections/crm-b`, { config: { auth: { tokenUrl: `${capture.url}/token` } } }), ['clientSecret', 'headerValue'], ['/config/auth/tokenUrl']);
    await expect422(t, asWriter('PATCH', `/v1/connections/crm-b`, { config: { auth: { tokenUrl: `${capture.url}/token` } }, secrets: { clientSecret: 'mine-1234' } }), ['headerValue'], ['/config/auth/tokenUrl']);
    // Removing the other secret (null) is sending it too.
    const r = await asWriter('PATCH', `/v1/connections/crm-b`, { config: { auth: { tokenUrl: `${capture.url}/token` } }, secrets: { clientSecret: 'mine-1234', headerValue: null } });
    t.equal(r.status, 200, JSON.stringify(r.body));
    t.same(r.body.secretNames, ['clientSecret']);
  });

  await t.test('PostgreSQL: host and port', async (t) => {
    const conn = await ok(h.request('POST', '/v1/connections', { body: pgConnection('wh', { secrets: { password: PASSWORD } }) }));
    await expect422(t, asWriter('PATCH', `/v1/connections/${conn.id}`, { config: { port: pgCap.port } }), ['password'], ['/config/port']);
    await expect422(t, asWriter('PATCH', `/v1/connections/${conn.id}`, { config: { host: 'localhost', port: pgCap.port } }), ['password'], ['/config/host', '/config/port']);
    await expect422(t, asWriter('PUT', `/v1/connections/wh`, { name: 'x', type: 'postgres', config: { ...pgConnection('wh').config, port: pgCap.port } }), ['password'], ['/config/port']);
    const tested = await h.request('POST', `/v1/connections/${conn.id}/test`, { token: reader.token });
    t.equal(tested.body.ok, true, 'still the real database');
    t.equal(pgCap.connections, 0, 'the capture server was never contacted');
    // A database-side change that keeps host and port: no secrets needed.
    t.equal((await asWriter('PATCH', `/v1/connections/${conn.id}`, { config: { statementTimeoutMs: 10_000 } })).status, 200);
    // The owner of the password may move it.
    // (The capture server asks for the password in clear: the owner allows that explicitly here.)
    const moved = await h.request('PATCH', `/v1/connections/${conn.id}`, { body: { config: { port: pgCap.port, allowCleartextPassword: true }, secrets: { password: 'throwaway-pw-1' } } });
    t.equal(moved.status, 200);
    const probe = await h.request('POST', `/v1/connections/${conn.id}/test`, { token: reader.token });
    t.equal(probe.body.ok, false);
    t.same(pgCap.passwords, ['throwaway-pw-1'], 'only the value sent with the change reached the new server');
  });

  await t.test('GraphQL mutations keep the same rule', async (t) => {
    const conn = await ok(h.request('POST', '/v1/connections', { body: pgConnection('wh-gql', { secrets: { password: PASSWORD } }) }));
    const r = await h.request('POST', '/graphql', {
      token: writer.token,
      body: { query: 'mutation($ref: String!, $input: UpdateConnectionInput!) { updateConnection(ref: $ref, input: $input) { id } }', variables: { ref: conn.id, input: { config: { port: pgCap.port } } } },
    });
    const errs = r.body.errors ?? [];
    t.equal(errs[0]?.extensions?.code, 'secrets_required', JSON.stringify(r.body));
  });

  await t.test('alert channels: PagerDuty eventsUrl', async (t) => {
    const pd = await ok(h.request('POST', '/v1/alert-channels', { body: { slug: 'pd', name: 'PD', type: 'pagerduty', config: { eventsUrl: 'http://127.0.0.1:9/v2/enqueue' }, secrets: { routingKey: ROUTING } } }));
    await expect422(t, asWriter('PATCH', `/v1/alert-channels/${pd.id}`, { config: { eventsUrl: `${capture.url}/enqueue` } }), ['routingKey'], ['/config/eventsUrl']);
    await expect422(t, asWriter('PUT', `/v1/alert-channels/pd`, { name: 'PD', type: 'pagerduty', config: { eventsUrl: `${capture.url}/enqueue` } }), ['routingKey'], ['/config/eventsUrl']);
    await expect422(t, asWriter('PUT', `/v1/alert-channels/pd`, { name: 'PD', type: 'pagerduty' }), ['routingKey'], ['/config/eventsUrl'], 'falling back to the default URL moves the key too');
    t.equal((await asWriter('PATCH', `/v1/alert-channels/${pd.id}`, { config: { severity: 'warning' } })).status, 200, 'severity does not move the key');
    const wh = await ok(h.request('POST', '/v1/alert-channels', { body: { slug: 'hook', name: 'Hook', type: 'webhook', config: { url: 'http://127.0.0.1:9/hook' }, secrets: { signingSecret: 'whsec_' + Buffer.from('0123456789abcdef0123456789abcdef').toString('base64') } } }));
    // A signing secret is never sent (only signatures made with it): moving the URL needs nothing.
    t.equal((await asWriter('PATCH', `/v1/alert-channels/${wh.id}`, { config: { url: `${capture.url}/hook` } })).status, 200);
    const tested = await asWriter('POST', `/v1/alert-channels/${pd.id}/test`);
    t.equal(tested.status, 200);
    t.notOk(capture.received.some((r) => r.raw.includes(ROUTING)), 'the routing key never reached the capture server');
  });

  t.same(leaked(), [], 'no admin secret ever reached a capture server');
});
