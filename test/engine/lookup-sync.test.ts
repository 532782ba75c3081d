import t from 'tap';
import postgres from 'postgres';
import { startFakeHubSpot } from '../fakes/hubspot.ts';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { runToEnd } from '../helpers/sync-setup.ts';

// Lookups through the engine (issue 14, item 5): contacts synced to HubSpot with a private-app
// token, each with its owner's id looked up by the account manager's email. One owner email
// matches two owners (ambiguous: the row is invalid, naming both), one matches none.

const engine = { retryBaseMs: 5, retryMaxMs: 50, heartbeatMs: 200 };

t.test('owner looked up by email: found, case-insensitive, not found, ambiguous', async (t) => {
  const hs = await startFakeHubSpot({ tokens: ['pat-test'] });
  t.teardown(() => hs.close());
  hs.owners.push(
    { id: '101', email: 'ada@corp.example', firstName: 'Ada', lastName: 'L', userId: 1 },
    { id: '102', email: 'alan@corp.example', firstName: 'Alan', lastName: 'T', userId: 2 },
    { id: '201', email: 'twin@corp.example', firstName: 'Twin', lastName: 'A', userId: 3 },
    { id: '202', email: 'twin@corp.example', firstName: 'Twin', lastName: 'B', userId: 4 },
  );
  const h = await startTestBackhaul(t, { start: { worker: true, engine } });
  const ok = (r: { status: number; body: any; text: string }) => {
    if (r.status >= 300) throw new Error(r.text);
    return r.body;
  };
  ok(await h.request('PUT', '/v1/connections/hubspot', { body: { name: 'HubSpot', type: 'hubspot', config: { baseUrl: hs.url }, secrets: { accessToken: 'pat-test' } } }));
  const src = postgres(h.databaseUrl, { max: 2, onnotice: () => {} });
  t.teardown(() => src.end());
  await src`create schema src`;
  await src`create table src.people (id int primary key, email text, manager text)`;
  await src`insert into src.people values (1, 'c1@example.com', 'ada@corp.example'), (2, 'c2@example.com', 'ALAN@corp.example'), (3, 'c3@example.com', 'nobody@corp.example'), (4, 'c4@example.com', 'twin@corp.example'), (5, 'c5@example.com', 'ada@corp.example')`;
  const u = new URL(h.databaseUrl);
  const db = ok(await h.request('PUT', '/v1/connections/warehouse', { body: { name: 'Warehouse', type: 'postgres', config: { host: u.hostname, port: Number(u.port), database: u.pathname.slice(1), user: decodeURIComponent(u.username) }, ...(u.password ? { secrets: { password: decodeURIComponent(u.password) } } : {}) } }));
  ok(await h.request('PUT', '/v1/models/people', { body: { name: 'People', connectionId: db.id, sql: 'select id, email, manager from src.people', primaryKey: 'id' } }));
  const sync = ok(
    await h.request('PUT', '/v1/syncs/people', {
      body: { name: 'People', modelId: 'people', destinationId: 'hubspot', object: 'contacts', mode: 'upsert', matchKey: { sourceColumn: 'email', destinationField: 'email' }, delivery: { maxRequestsPerSecond: 200 } },
    }),
  );
  ok(
    await h.request('PUT', `/v1/syncs/${sync.id}/mappings`, {
      body: [
        { destinationField: 'email', source: { column: 'email' } },
        { destinationField: 'hubspot_owner_id', source: { lookup: { object: 'owners', matchField: 'email', sourceColumn: 'manager', resultField: 'id', caseInsensitive: true } } },
      ],
    }),
  );
  const run = await runToEnd(h, sync.id, {}, 120_000);
  t.equal(run.status, 'partially_succeeded', JSON.stringify(run.error));
  t.same(run.counts.succeeded, { insert: 3, update: 0, delete: 0 });
  t.equal(run.counts.invalid, 2);
  const contacts = [...hs.objects.get('contacts')!.records.values()].map((r: any) => [r.properties.email, r.properties.hubspot_owner_id]).sort();
  t.same(contacts, [
    ['c1@example.com', '101'],
    ['c2@example.com', '102'],
    ['c5@example.com', '101'],
  ]);
  const invalid = (await h.request('GET', `/v1/runs/${run.id}/records?status=invalid`)).body.data;
  const byPk = Object.fromEntries(invalid.map((r: { primaryKey: string; error: { code: string; message: string } }) => [r.primaryKey, r.error]));
  t.equal(byPk['3'].code, 'lookup_not_found');
  t.equal(byPk['4'].code, 'lookup_ambiguous');
  t.match(byPk['4'].message, /201/);
  t.match(byPk['4'].message, /202/);
});
