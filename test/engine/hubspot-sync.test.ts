import t from 'tap';
import postgres from 'postgres';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { runToEnd, waitForRun } from '../helpers/sync-setup.ts';
import { startFakeHubSpot } from '../fakes/hubspot.ts';
import { startFakeOAuthServer } from '../fakes/oauth-server.ts';

// PostgreSQL → HubSpot through the real engine, on a connection connected with the OAuth flow:
// a full sync, rows HubSpot refuses rejected with HubSpot's own reasons (per row in a 207, and
// found by bisection when HubSpot refuses a whole batch), a 1% change, an access token that
// expires between runs, and mirror deletes.

const engine = { retryBaseMs: 5, retryMaxMs: 50, heartbeatMs: 200 };

t.test('a sync to HubSpot connected through OAuth', async (t) => {
  const oauth = await startFakeOAuthServer({ rotateRefreshTokens: true });
  t.teardown(() => oauth.close());
  const hs = await startFakeHubSpot();
  hs.oauth = oauth;
  t.teardown(() => hs.close());
  const h = await startTestBackhaul(t, { start: { worker: true, engine }, env: { BACKHAUL_HUBSPOT_CLIENT_ID: oauth.clientId, BACKHAUL_HUBSPOT_CLIENT_SECRET: oauth.clientSecret, BACKHAUL_HUBSPOT_AUTHORIZE_URL: oauth.authorizeUrl, BACKHAUL_HUBSPOT_TOKEN_URL: oauth.tokenUrl } });
  const ok = (r: { status: number; body: any; text: string }) => {
    if (r.status >= 300) throw new Error(r.text);
    return r.body;
  };

  // Connect through the flow (the fake consents at once).
  ok(await h.request('PUT', '/v1/connections/hubspot', { body: { name: 'HubSpot', type: 'hubspot', config: { baseUrl: hs.url } } }));
  const { authorizationUrl } = ok(await h.request('POST', '/v1/connections/hubspot/oauth/start', { body: {} }));
  const consent = await fetch(authorizationUrl, { redirect: 'manual' });
  t.equal((await fetch(consent.headers.get('location')!, { redirect: 'manual' })).status, 200);

  const src = postgres(h.databaseUrl, { max: 2, onnotice: () => {} });
  t.teardown(() => src.end());
  await src`create schema src`;
  await src`create table src.people (id int primary key, email text, first_name text, employees int)`;
  await src`insert into src.people select i, case when i in (13, 77) then 'not-an-email-' || i else 'user' || i || '@example.com' end, 'User ' || i, i from generate_series(1, 1000) i`;
  const u = new URL(h.databaseUrl);
  const db = ok(await h.request('PUT', '/v1/connections/warehouse', { body: { name: 'Warehouse', type: 'postgres', config: { host: u.hostname, port: Number(u.port), database: u.pathname.slice(1), user: decodeURIComponent(u.username) }, ...(u.password ? { secrets: { password: decodeURIComponent(u.password) } } : {}) } }));
  const model = ok(await h.request('PUT', '/v1/models/people', { body: { name: 'People', connectionId: db.id, sql: 'select id, email, first_name, employees from src.people', primaryKey: 'id' } }));
  const sync = ok(
    await h.request('PUT', '/v1/syncs/people-to-hubspot', {
      body: {
        name: 'People to HubSpot',
        modelId: model.id,
        destinationId: 'hubspot',
        object: 'contacts',
        mode: 'mirror',
        matchKey: { sourceColumn: 'email', destinationField: 'email' },
        delivery: { batchSize: 100, concurrency: 4, maxRequestsPerSecond: 200, maxRetries: 5 },
      },
    }),
  );
  ok(
    await h.request('PUT', `/v1/syncs/${sync.id}/mappings`, {
      body: [
        { destinationField: 'email', source: { column: 'email' } },
        { destinationField: 'firstname', source: { column: 'first_name' } },
        { destinationField: 'num_employees', source: { column: 'employees' } },
      ],
    }),
  );
  hs.reject = (_o, p) => (p.firstname === 'User 500' ? 'The value "User 500" is on the blocked list' : undefined);

  const first = await runToEnd(h, sync.id, {}, 120_000);
  t.equal(first.status, 'partially_succeeded', JSON.stringify(first.error));
  t.same(first.counts.succeeded, { insert: 997, update: 0, delete: 0 });
  t.same(first.counts.rejected, { insert: 3, update: 0, delete: 0 });
  t.equal(hs.objects.get('contacts')!.records.size, 997);
  const rejected = (await h.request('GET', `/v1/runs/${first.id}/records?status=rejected`)).body.data;
  const reason = (pk: string) => rejected.find((r: { primaryKey: string }) => r.primaryKey === pk)?.error;
  t.match(reason('13'), { message: /INVALID_EMAIL|not-an-email-13/ }, 'found by bisection, with HubSpot\'s reason');
  t.match(reason('77'), { message: /INVALID_EMAIL|not-an-email-77/ });
  t.match(reason('500'), { code: 'hubspot_validation_error', message: /blocked list/ }, 'the 207 error lands on its own row');
  t.ok(hs.calls.every((c) => c.auth?.startsWith('Bearer at-')), 'every request carried the OAuth access token');

  // 1% change, with the access token expired in between: one refresh, only the changed rows sent.
  hs.reject = undefined;
  oauth.expireAccessTokens();
  const refreshes = oauth.refreshes;
  await src`update src.people set first_name = first_name || ' (changed)' where id % 100 = 0 and id <> 500`;
  await src`update src.people set email = 'user' || id || '@example.com' where id in (13, 77)`;
  const writesBefore = hs.calls.filter((c) => c.path.endsWith('/batch/upsert')).reduce((n, c) => n + c.body.inputs.length, 0);
  const second = await runToEnd(h, sync.id, {}, 120_000);
  t.equal(second.status, 'succeeded', JSON.stringify(second.error));
  t.equal(oauth.refreshes - refreshes, 1, 'the expired token was refreshed once');
  const sent = hs.calls.filter((c) => c.path.endsWith('/batch/upsert')).reduce((n, c) => n + c.body.inputs.length, 0) - writesBefore;
  t.equal(sent, 12, 'only the 9 changed rows and the 3 rejected last time were sent');
  t.same(second.counts.succeeded, { insert: 3, update: 9, delete: 0 });
  const changed = [...hs.objects.get('contacts')!.records.values()].find((r) => r.properties.email === 'user100@example.com')!;
  t.equal(changed.properties.firstname, 'User 100 (changed)');

  // Mirror: rows leaving the model are archived in HubSpot.
  await src`delete from src.people where id between 1 and 5`;
  const third = await runToEnd(h, sync.id, {}, 120_000);
  t.same(third.counts.succeeded.delete, 5, JSON.stringify(third.counts));
  const emails = new Set([...hs.objects.get('contacts')!.records.values()].map((r) => r.properties.email));
  t.notOk(emails.has('user3@example.com'));
  t.ok(emails.has('user6@example.com'));
  await waitForRun(h, third.id);
});
