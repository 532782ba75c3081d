import t, { type Test } from 'tap';
import postgres from 'postgres';
import { startTestBackhaul, type TestBackhaul } from '../helpers/backhaul.ts';
import { newKey } from '../helpers/http-fixtures.ts';
import { startFakeOAuthServer, type FakeOAuthServer } from '../fakes/oauth-server.ts';
import { startFakeHubSpot, type FakeHubSpot } from '../fakes/hubspot.ts';

// The OAuth connect flow through GraphQL: startConnectionOAuth and Connection.authStatus/authError
// are the REST API's POST /v1/connections/{ref}/oauth/start and the connection view's fields,
// through the same service. Every state a connection goes through reads the same in both APIs,
// a flow started through GraphQL completes at the REST callback, and every refusal carries REST's
// code and status in extensions.

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
      BACKHAUL_OAUTH_RETURN_ORIGINS: RETURN,
      BACKHAUL_HUBSPOT_CLIENT_ID: oauth.clientId,
      BACKHAUL_HUBSPOT_CLIENT_SECRET: oauth.clientSecret,
      BACKHAUL_HUBSPOT_AUTHORIZE_URL: oauth.authorizeUrl,
      BACKHAUL_HUBSPOT_TOKEN_URL: oauth.tokenUrl,
    },
  });
  db = postgres(h.databaseUrl, { max: 1, onnotice: () => {} });
  t.teardown(() => db.end());
  for (const body of [
    { slug: 'crm', name: 'HubSpot', type: 'hubspot', config: { baseUrl: hs.url } },
    { slug: 'warehouse', name: 'Warehouse', type: 'postgres', config: { host: '127.0.0.1', database: 'd', user: 'u' } },
    // Its own client id without its secret: oauth_client_not_configured.
    { slug: 'own-client', name: 'Own client', type: 'hubspot', config: { oauth: { clientId: 'theirs' } } },
  ]) {
    const res = await h.request('POST', '/v1/connections', { body });
    if (res.status !== 201) throw new Error(res.text);
  }
});

async function gql(query: string, variables: Record<string, unknown> = {}, token?: string) {
  const res = await h.request('POST', '/graphql', { body: { query, variables }, token });
  if (res.status !== 200) throw new Error(`GraphQL answered ${res.status}: ${res.text}`);
  return res.body as { data: any; errors?: { message: string; path?: string[]; extensions: { code: string; status: number; errors?: unknown; hint?: string } }[] };
}

const START = `mutation($ref: String!, $input: StartConnectionOAuthInput) { startConnectionOAuth(ref: $ref, input: $input) { authorizationUrl expiresAt } }`;

/** authStatus and authError as GraphQL and REST show them (REST leaves absent what GraphQL shows as null). */
async function bothViews(ref: string) {
  const g = (await gql('query($ref: String!) { connection(ref: $ref) { authStatus authError } }', { ref })).data.connection;
  const r = (await h.request('GET', `/v1/connections/${ref}`)).body;
  return { graphql: g, rest: { authStatus: r.authStatus ?? null, authError: r.authError ?? null } };
}

async function sameAuthView(t: Test, ref: string, expected: string | null) {
  const v = await bothViews(ref);
  t.same(v.graphql, v.rest, `${ref}: GraphQL shows what REST shows`);
  t.equal(v.graphql.authStatus, expected, `${ref}: ${expected}`);
  return v.graphql as { authStatus: string | null; authError: string | null };
}

/** Follows the flow like a browser: the consent page redirects to our (REST) callback. */
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

t.test('startConnectionOAuth starts the same flow as REST; it completes at the callback; authStatus follows in both APIs', async (t) => {
  await sameAuthView(t, 'crm', 'not_connected');
  await sameAuthView(t, 'warehouse', null);

  const rest = await h.request('POST', '/v1/connections/crm/oauth/start', { body: { returnUrl: `${RETURN}/settings` } });
  t.equal(rest.status, 200, rest.text);
  const res = await gql(START, { ref: 'crm', input: { returnUrl: `${RETURN}/settings` } });
  t.notOk(res.errors, JSON.stringify(res.errors));
  const started = res.data.startConnectionOAuth;
  t.same(Object.keys(started).sort(), Object.keys(rest.body).sort(), 'the same fields as REST');
  const g = new URL(started.authorizationUrl);
  const r = new URL(rest.body.authorizationUrl);
  t.equal(`${g.origin}${g.pathname}`, oauth.authorizeUrl);
  for (const p of ['client_id', 'redirect_uri', 'response_type', 'code_challenge_method', 'scope', 'optional_scope']) {
    t.equal(g.searchParams.get(p), r.searchParams.get(p), `${p} as REST's`);
  }
  t.equal(g.searchParams.get('redirect_uri'), `${h.url}/v1/oauth/callback`, 'the REST callback, from the request origin as REST computes it');
  t.not(g.searchParams.get('state'), r.searchParams.get('state'), 'a new state per flow');
  t.not(g.searchParams.get('code_challenge'), r.searchParams.get('code_challenge'), 'a new PKCE verifier per flow');
  const left = Date.parse(started.expiresAt) - Date.now();
  t.ok(left > 0 && left <= 10 * 60_000, 'expires within 10 minutes');
  const [{ n }] = await db<{ n: number }[]>`select count(*)::int as n from oauth_states where state_hash = encode(sha256(${g.searchParams.get('state')!}::bytea), 'hex')`;
  t.equal(n, 1, 'the state is kept server-side, by hash');

  const done = await consent(started.authorizationUrl);
  t.equal(done.status, 302);
  const back = new URL(done.headers.get('location')!);
  t.equal(`${back.origin}${back.pathname}`, `${RETURN}/settings`);
  t.same(Object.fromEntries(back.searchParams), { connection: 'crm', status: 'connected' });
  await sameAuthView(t, 'crm', 'connected');
  const conn = (await gql('{ connection(ref: "crm") { secretNames } }')).data.connection;
  t.same(conn.secretNames, ['accessToken', 'accessTokenExpiresAt', 'refreshToken']);

  // A revoked grant: the connection must be connected again; both APIs say so, with the provider's answer.
  const [row] = await db<{ secrets_sealed: string }[]>`select secrets_sealed from connections where slug = 'crm'`;
  oauth.revokeRefreshToken((h.bh.services.deps.secrets.open(row.secrets_sealed) as Record<string, string>).refreshToken);
  oauth.expireAccessTokens();
  t.match(await writeOne('a@example.com').catch((e) => e), { code: 'reauthorization_required' });
  const revoked = await sameAuthView(t, 'crm', 'reauthorization_required');
  t.match(revoked.authError, /invalid_grant/);

  // Reconnecting through GraphQL clears it (no returnUrl: the confirmation page).
  const again = (await gql(START, { ref: 'crm' })).data.startConnectionOAuth;
  t.equal((await consent(again.authorizationUrl)).status, 200);
  await sameAuthView(t, 'crm', 'connected');
  t.match((await writeOne('a@example.com')).results, [{ status: 'succeeded' }]);
});

t.test('refusals carry the REST code and status in extensions', async (t) => {
  const reader = await newKey(h, ['read']);
  const cases: { name: string; ref: string; input?: Record<string, unknown>; token?: string; code: string }[] = [
    { name: 'a type without OAuth', ref: 'warehouse', code: 'oauth_not_supported' },
    { name: 'no client configured', ref: 'own-client', code: 'oauth_client_not_configured' },
    { name: 'a returnUrl of another origin', ref: 'crm', input: { returnUrl: 'https://evil.example.net/x' }, code: 'return_url_not_allowed' },
    { name: 'a returnUrl that is not http(s)', ref: 'crm', input: { returnUrl: 'javascript:alert(1)' }, code: 'return_url_not_allowed' },
    { name: 'an unknown connection', ref: 'nope', code: 'not_found' },
    { name: 'a read-only key', ref: 'crm', token: reader.token, code: 'forbidden' },
  ];
  const before = (await db<{ n: number }[]>`select count(*)::int as n from oauth_states`)[0].n;
  for (const c of cases) {
    const rest = await h.request('POST', `/v1/connections/${c.ref}/oauth/start`, { body: c.input ?? {}, token: c.token });
    const res = await gql(START, { ref: c.ref, ...(c.input ? { input: c.input } : {}) }, c.token);
    t.equal(res.data, null, `${c.name}: no data`);
    const err = res.errors?.[0];
    t.same(err?.path, ['startConnectionOAuth'], c.name);
    t.equal(rest.body.code, c.code, `${c.name}: REST says ${c.code}`);
    t.equal(err?.extensions.code, rest.body.code, `${c.name}: the same code`);
    t.equal(err?.extensions.status, rest.status, `${c.name}: the same status`);
    if (rest.body.errors) t.same(err?.extensions.errors, rest.body.errors, `${c.name}: the same field errors (paths into input)`);
    if (rest.body.hint) t.equal(err?.extensions.hint, rest.body.hint, `${c.name}: the same hint`);
  }
  const after = (await db<{ n: number }[]>`select count(*)::int as n from oauth_states`)[0].n;
  t.equal(after, before, 'a refused start keeps no state');
});

t.test('the catalog: Connector.oauth is REST\'s oauth for every type', async (t) => {
  const rest = (await h.request('GET', '/v1/connectors')).body.data as { type: string; oauth: unknown }[];
  const graph = (await gql('{ connectors { type oauth { provider authorizeUrl tokenUrl scopes } } }')).data.connectors as { type: string; oauth: unknown }[];
  t.same(
    graph.map((c) => [c.type, c.oauth]),
    rest.map((c) => [c.type, c.oauth]),
  );
  t.ok(graph.some((c) => c.oauth !== null) && graph.some((c) => c.oauth === null), 'both kinds present');
});
