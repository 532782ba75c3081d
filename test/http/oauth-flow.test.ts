import t from 'tap';
import postgres from 'postgres';
import { startTestBackhaul, type TestBackhaul } from '../helpers/backhaul.ts';
import { startFakeOAuthServer, type FakeOAuthServer } from '../fakes/oauth-server.ts';
import { startFakeHubSpot, type FakeHubSpot } from '../fakes/hubspot.ts';

// Connecting a HubSpot connection through the OAuth flow, end to end over HTTP: start → the
// provider's consent (the fake approves at once) → our callback → tokens sealed as secrets →
// writes with the access token, refreshed on a 401 → a revoked grant shows
// reauthorization_required until a new flow completes.

let h: TestBackhaul;
let oauth: FakeOAuthServer;
let hs: FakeHubSpot;
let db: postgres.Sql;
const RETURN = 'https://app.example.com';

t.before(async () => {
  oauth = await startFakeOAuthServer({ rotateRefreshTokens: true });
  t.teardown(() => oauth.close());
  hs = await startFakeHubSpot();
  hs.oauth = oauth;
  t.teardown(() => hs.close());
  h = await startTestBackhaul(t, {
    env: {
      BACKHAUL_OAUTH_RETURN_ORIGINS: `${RETURN}, https://other.example.com`,
      BACKHAUL_HUBSPOT_CLIENT_ID: oauth.clientId,
      BACKHAUL_HUBSPOT_CLIENT_SECRET: oauth.clientSecret,
      // The instance's HubSpot endpoints (the fake): Backhaul's client secret goes only there.
      BACKHAUL_HUBSPOT_AUTHORIZE_URL: oauth.authorizeUrl,
      BACKHAUL_HUBSPOT_TOKEN_URL: oauth.tokenUrl,
    },
  });
  db = postgres(h.databaseUrl, { max: 1, onnotice: () => {} });
  t.teardown(() => db.end());
  const res = await h.request('POST', '/v1/connections', {
    body: { slug: 'crm', name: 'HubSpot', type: 'hubspot', config: { baseUrl: hs.url } },
  });
  if (res.status !== 201) throw new Error(res.text);
});

/** Follows the flow like a browser: the consent page redirects to our callback, which answers. */
async function consent(authorizationUrl: string): Promise<Response> {
  const atProvider = await fetch(authorizationUrl, { redirect: 'manual' });
  if (atProvider.status !== 302) throw new Error(`provider answered ${atProvider.status}`);
  return fetch(atProvider.headers.get('location')!, { redirect: 'manual' });
}

async function writeOne(email: string) {
  const [ws] = await db<{ id: string }[]>`select id from workspaces where slug = 'default'`;
  const svc = h.bh.services.connections;
  const dest = svc.openDestination(await svc.row(h.bh.services.deps.database.db, ws.id, 'crm'));
  try {
    return await dest.write({ object: 'contacts', operation: 'upsert', matchField: 'email', rows: [{ primaryKey: email, payload: { email } }] });
  } finally {
    await dest.close();
  }
}

t.test('the flow connects the connection; its tokens are sealed secrets', async (t) => {
  t.equal((await h.request('GET', '/v1/connections/crm')).body.authStatus, 'not_connected');
  const start = await h.request('POST', '/v1/connections/crm/oauth/start', { body: { returnUrl: `${RETURN}/settings?tab=crm` } });
  t.equal(start.status, 200, start.text);
  const u = new URL(start.body.authorizationUrl);
  t.equal(`${u.origin}${u.pathname}`, oauth.authorizeUrl);
  t.equal(u.searchParams.get('client_id'), oauth.clientId);
  t.equal(u.searchParams.get('redirect_uri'), `${h.url}/v1/oauth/callback`);
  t.equal(u.searchParams.get('code_challenge_method'), 'S256');
  t.match(u.searchParams.get('scope'), /crm\.objects\.contacts\.write/);
  t.match(u.searchParams.get('optional_scope'), /tickets/);
  t.ok(Date.parse(start.body.expiresAt) - Date.now() <= 10 * 60_000);
  const [{ n }] = await db<{ n: number }[]>`select count(*)::int as n from oauth_states where state_hash = encode(sha256(${u.searchParams.get('state')!}::bytea), 'hex')`;
  t.equal(n, 1, 'the state is kept server-side, by hash');

  const done = await consent(start.body.authorizationUrl);
  t.equal(done.status, 302);
  const back = new URL(done.headers.get('location')!);
  t.equal(`${back.origin}${back.pathname}`, `${RETURN}/settings`);
  t.same(Object.fromEntries(back.searchParams), { tab: 'crm', connection: 'crm', status: 'connected' });
  t.equal(oauth.codeExchanges, 1, 'the code was exchanged with its PKCE verifier (the fake checks it)');

  const conn = (await h.request('GET', '/v1/connections/crm')).body;
  t.equal(conn.authStatus, 'connected');
  t.same(conn.secretNames, ['accessToken', 'accessTokenExpiresAt', 'refreshToken']);
  t.notOk(JSON.stringify(conn).includes('at-'), 'no token in the view');
  const [row] = await db<{ secrets_sealed: string }[]>`select secrets_sealed from connections where slug = 'crm'`;
  t.notOk(row.secrets_sealed.includes('rt-'), 'sealed at rest');

  // The state is single use.
  const replay = await fetch(done.url, { redirect: 'manual' });
  t.equal(replay.status, 400);
  t.equal(((await replay.json()) as { code: string }).code, 'oauth_state_invalid');
});

t.test('writes use the access token and refresh it once after a 401', async (t) => {
  const first = await writeOne('a@example.com');
  t.match(first.results, [{ status: 'succeeded' }]);
  t.match(hs.calls.at(-1)!.auth, /^Bearer at-/);
  const refreshes = oauth.refreshes;
  oauth.expireAccessTokens();
  const second = await writeOne('b@example.com');
  t.match(second.results, [{ status: 'succeeded' }]);
  t.equal(oauth.refreshes - refreshes, 1, 'one refresh');
  t.same(hs.calls.slice(-2).map((c) => c.path), ['/crm/v3/objects/contacts/batch/upsert', '/crm/v3/objects/contacts/batch/upsert'], 'refused once, then sent again with the new token');
});

t.test('a revoked grant fails with reauthorization_required until a new flow completes', async (t) => {
  const [row] = await db<{ secrets_sealed: string }[]>`select secrets_sealed from connections where slug = 'crm'`;
  const secrets = h.bh.services.deps.secrets.open(row.secrets_sealed) as Record<string, string>;
  oauth.revokeRefreshToken(secrets.refreshToken);
  oauth.expireAccessTokens();
  const err = await writeOne('c@example.com').catch((e) => e);
  t.match(err, { code: 'reauthorization_required', classification: 'fatal', hint: /oauth\/start/ });
  const conn = (await h.request('GET', '/v1/connections/crm')).body;
  t.equal(conn.authStatus, 'reauthorization_required');
  t.match(conn.authError, /invalid_grant/);

  // Reconnect without a returnUrl: a small page says it is connected.
  const start = await h.request('POST', '/v1/connections/crm/oauth/start', { body: {} });
  const done = await consent(start.body.authorizationUrl);
  t.equal(done.status, 200);
  t.match(done.headers.get('content-type'), /text\/html/);
  t.match(await done.text(), /Connection &#34;crm&#34; is connected/);
  t.equal((await h.request('GET', '/v1/connections/crm')).body.authStatus, 'connected');
  t.match((await writeOne('c@example.com')).results, [{ status: 'succeeded' }]);
});

t.test('refusals: provider denial, expired state, foreign returnUrl, types without OAuth, no client', async (t) => {
  oauth.deny = true;
  const start = await h.request('POST', '/v1/connections/crm/oauth/start', { body: { returnUrl: RETURN } });
  const denied = await consent(start.body.authorizationUrl);
  oauth.deny = false;
  t.equal(denied.status, 302);
  t.same(Object.fromEntries(new URL(denied.headers.get('location')!).searchParams), { connection: 'crm', status: 'error', code: 'oauth_denied' });
  t.equal((await h.request('GET', '/v1/connections/crm')).body.authStatus, 'connected', 'a denied new flow leaves the working tokens alone');

  const late = await h.request('POST', '/v1/connections/crm/oauth/start', { body: {} });
  await db`update oauth_states set expires_at = now() - interval '1 second'`;
  const expired = await consent(late.body.authorizationUrl);
  t.equal(expired.status, 400);
  t.match(await expired.json(), { code: 'oauth_state_expired' });

  const foreign = await h.request('POST', '/v1/connections/crm/oauth/start', { body: { returnUrl: 'https://evil.example.net/x' } });
  t.equal(foreign.status, 400);
  t.equal(foreign.body.code, 'return_url_not_allowed');

  const noState = await fetch(`${h.url}/v1/oauth/callback?code=x`);
  t.equal(noState.status, 400);
  t.equal(((await noState.json()) as { code: string }).code, 'oauth_state_invalid');

  await h.request('POST', '/v1/connections', { body: { slug: 'plain', name: 'Plain', type: 'http', config: { baseUrl: 'http://127.0.0.1:9', objects: [{ name: 'x', fields: [], operations: { insert: { method: 'POST', path: '/x' } } }] } } });
  const plain = await h.request('POST', '/v1/connections/plain/oauth/start', { body: {} });
  t.equal(plain.status, 422);
  t.equal(plain.body.code, 'oauth_not_supported');

  await h.request('POST', '/v1/connections', { body: { slug: 'own-client', name: 'Own client', type: 'hubspot', config: { oauth: { clientId: 'theirs' } } } });
  const noSecret = await h.request('POST', '/v1/connections/own-client/oauth/start', { body: {} });
  t.equal(noSecret.status, 422);
  t.equal(noSecret.body.code, 'oauth_client_not_configured');
  t.match(noSecret.body.hint, /BACKHAUL_HUBSPOT_CLIENT_ID/);

  // Backhaul's own client secret is never sent to a token URL a connection chose...
  await h.request('POST', '/v1/connections', { body: { slug: 'elsewhere', name: 'Elsewhere', type: 'hubspot', config: { oauth: { tokenUrl: 'https://collector.example.net/token' } } } });
  const elsewhere = await h.request('POST', '/v1/connections/elsewhere/oauth/start', { body: {} });
  t.equal(elsewhere.status, 422);
  t.equal(elsewhere.body.code, 'oauth_token_url_not_trusted');
  // ...but a connection with its own client may point anywhere.
  await h.request('POST', '/v1/connections', {
    body: { slug: 'own', name: 'Own', type: 'hubspot', config: { oauth: { clientId: oauth.clientId, tokenUrl: oauth.tokenUrl, authorizeUrl: oauth.authorizeUrl } }, secrets: { clientSecret: oauth.clientSecret } },
  });
  const own = await h.request('POST', '/v1/connections/own/oauth/start', { body: {} });
  t.equal(own.status, 200, own.text);
  t.equal((await consent(own.body.authorizationUrl)).status, 200, 'its flow completes with its own client');

  const anon = await h.request('POST', '/v1/connections/crm/oauth/start', { body: {}, token: null });
  t.equal(anon.status, 401, 'starting needs an API key');
});

t.test('a private-app token works without any flow', async (t) => {
  hs.tokens.add('pat-static');
  const res = await h.request('POST', '/v1/connections', { body: { slug: 'crm-static', name: 'HubSpot (token)', type: 'hubspot', config: { baseUrl: hs.url }, secrets: { accessToken: 'pat-static' } } });
  t.equal(res.status, 201);
  t.equal(res.body.authStatus, 'connected');
  const test = await h.request('POST', '/v1/connections/crm-static/test');
  t.same(test.body.ok, true, JSON.stringify(test.body));
  const fields = await h.request('GET', '/v1/connections/crm-static/objects/contacts/fields');
  t.match(fields.body.data.find((f: { name: string }) => f.name === 'email'), { identifier: true, equality: 'case_insensitive' });
});

t.test('the catalog describes HubSpot: config schema, secrets, capabilities with lookup and rate, OAuth endpoints', async (t) => {
  const res = await h.request('GET', '/v1/connectors');
  const hub = res.body.data.find((c: { type: string }) => c.type === 'hubspot');
  t.match(hub, {
    roles: ['destination'],
    capabilities: { maxBatchSize: 100, defaultMaxRequestsPerSecond: 10, lookup: true, modes: ['insert', 'update', 'upsert', 'mirror'] },
    oauth: { provider: 'hubspot', authorizeUrl: 'https://app.hubspot.com/oauth/authorize', tokenUrl: 'https://api.hubapi.com/oauth/v3/token' },
  });
  t.ok(hub.configSchema.properties.oauth.properties.tokenUrl, 'token URL overridable per connection');
  t.same(hub.secrets.map((s: { name: string }) => s.name), ['accessToken', 'refreshToken', 'accessTokenExpiresAt', 'clientSecret']);
  t.equal(res.body.data.find((c: { type: string }) => c.type === 'postgres').oauth, null);
  t.match(res.body.data.find((c: { type: string }) => c.type === 'http').capabilities, { lookup: true });
});
