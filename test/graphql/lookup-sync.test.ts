import t from 'tap';
import postgres from 'postgres';
import { startFakeHubSpot } from '../fakes/hubspot.ts';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { waitForRun } from '../helpers/sync-setup.ts';

// A lookup mapping written through GraphQL drives the engine as the REST one does: contacts synced
// to HubSpot with the owner's id looked up by the manager's email, case-insensitively, and left
// unset where no owner matches (onMissing: skip_field); an ambiguous email still makes the row
// invalid. The run's records read through GraphQL show what REST shows, HubSpot's record ids included.

const engine = { retryBaseMs: 5, retryMaxMs: 50, heartbeatMs: 200 };

t.test('a GraphQL lookup mapping with caseInsensitive and onMissing: skip_field, through a real run', async (t) => {
  const hs = await startFakeHubSpot({ tokens: ['pat-test'] });
  t.teardown(() => hs.close());
  hs.owners.push(
    { id: '101', email: 'ada@corp.example', firstName: 'Ada', lastName: 'L', userId: 1 },
    { id: '102', email: 'alan@corp.example', firstName: 'Alan', lastName: 'T', userId: 2 },
    { id: '201', email: 'twin@corp.example', firstName: 'Twin', lastName: 'A', userId: 3 },
    { id: '202', email: 'twin@corp.example', firstName: 'Twin', lastName: 'B', userId: 4 },
  );
  const h = await startTestBackhaul(t, { start: { worker: true, engine } });
  const gql = async (query: string, variables: Record<string, unknown> = {}) => {
    const r = await h.request('POST', '/graphql', { body: { query, variables } });
    if (r.status !== 200 || r.body.errors) throw new Error(r.text);
    return r.body.data;
  };
  const src = postgres(h.databaseUrl, { max: 2, onnotice: () => {} });
  t.teardown(() => src.end());
  await src`create schema src`;
  await src`create table src.people (id int primary key, email text, manager text)`;
  await src`insert into src.people values (1, 'c1@example.com', 'ada@corp.example'), (2, 'c2@example.com', ' ALAN@corp.example'), (3, 'c3@example.com', 'nobody@corp.example'), (4, 'c4@example.com', 'twin@corp.example')`;
  const u = new URL(h.databaseUrl);
  await gql('mutation($i: CreateConnectionInput!) { createConnection(input: $i) { id } }', {
    i: { slug: 'hubspot', name: 'HubSpot', type: 'hubspot', config: { baseUrl: hs.url }, secrets: { accessToken: 'pat-test' } },
  });
  await gql('mutation($i: CreateConnectionInput!) { createConnection(input: $i) { id } }', {
    i: {
      slug: 'warehouse',
      name: 'Warehouse',
      type: 'postgres',
      config: { host: u.hostname, port: Number(u.port), database: u.pathname.slice(1), user: decodeURIComponent(u.username) },
      ...(u.password ? { secrets: { password: decodeURIComponent(u.password) } } : {}),
    },
  });
  await gql('mutation($i: CreateModelInput!) { createModel(input: $i) { id } }', {
    i: { slug: 'people', name: 'People', connectionId: 'warehouse', sql: 'select id, email, manager from src.people', primaryKey: 'id' },
  });
  const lookup = { object: 'owners', matchField: 'email', sourceColumn: 'manager', resultField: 'id', caseInsensitive: true, onMissing: 'skip_field' };
  const sync = (
    await gql('mutation($i: CreateSyncInput!) { createSync(input: $i) { id } }', {
      i: {
        slug: 'people',
        name: 'People',
        modelId: 'people',
        destinationId: 'hubspot',
        object: 'contacts',
        mode: 'upsert',
        matchKey: { sourceColumn: 'email', destinationField: 'email' },
        delivery: { maxRequestsPerSecond: 200 },
        mappings: [
          { destinationField: 'email', source: { column: 'email' } },
          { destinationField: 'hubspot_owner_id', source: { lookup } },
        ],
      },
    })
  ).createSync;
  t.same(
    (await h.request('GET', `/v1/syncs/${sync.id}/mappings`)).body.data.map((m: { source: unknown }) => m.source),
    [{ column: 'email' }, { lookup }],
    'REST reads the mapping set as written',
  );

  const { run } = (await gql('mutation($s: String!) { triggerRun(syncRef: $s) { run { id } } }', { s: 'people' })).triggerRun;
  const done = await waitForRun(h, run.id, 120_000);
  t.equal(done.status, 'partially_succeeded', JSON.stringify(done.error));
  t.same(done.counts.succeeded, { insert: 3, update: 0, delete: 0 });
  t.equal(done.counts.invalid, 1);
  const contacts = [...hs.objects.get('contacts')!.records.values()].map((r: any) => [r.properties.email, r.properties.hubspot_owner_id ?? null]).sort();
  t.same(
    contacts,
    [
      ['c1@example.com', '101'],
      ['c2@example.com', '102'],
      ['c3@example.com', null],
    ],
    'found (c2 case-insensitively and trimmed); not found: sent without the field',
  );

  const graph = (
    await gql('query($r: ID!) { run(id: $r) { records(first: 50) { nodes { primaryKey operation status error { code message } recordId } } } }', { r: run.id })
  ).run.records.nodes as { primaryKey: string; operation: string; status: string; error: { code: string; message: string } | null; recordId: string | null }[];
  const rest = (await h.request('GET', `/v1/runs/${run.id}/records`)).body.data as typeof graph;
  t.same(
    graph,
    rest.map((r) => ({ primaryKey: r.primaryKey, operation: r.operation, status: r.status, error: r.error, recordId: r.recordId ?? null })),
    'GraphQL shows the records REST shows',
  );
  const byPk = Object.fromEntries(graph.map((r) => [r.primaryKey, r]));
  t.match(byPk['4'], { status: 'invalid', error: { code: 'lookup_ambiguous', message: /201.*202|202.*201/ } }, 'ambiguous: invalid, naming both owners');
  for (const pk of ['1', '2', '3']) {
    const id = byPk[pk].recordId!;
    t.ok(id, `row ${pk}: HubSpot's record id`);
    t.equal(hs.objects.get('contacts')!.records.get(id)?.properties.email, `c${pk}@example.com`, `row ${pk}: that id is its record`);
  }
});
