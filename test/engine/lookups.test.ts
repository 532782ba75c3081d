import t from 'tap';
import { hubspotType } from '../../src/connectors/destinations/hubspot-type.ts';
import { postgresType } from '../../src/connectors/postgres-type.ts';
import { compileMappings, type MappingSpec } from '../../src/connectors/mapping.ts';
import type { DestinationField } from '../../src/connectors/types.ts';
import { LookupResolver } from '../../src/engine/lookups.ts';
import { startFakeHubSpot, type FakeHubSpot } from '../fakes/hubspot.ts';

// Lookup mappings resolved per run against the HubSpot fake, without the engine: the resolver
// prepares a batch of source rows (distinct values, batched, cached), then compiled mappings map
// each row from the cache.

const TOKEN = 'pat-lookups';
let hs: FakeHubSpot;
t.before(async () => {
  hs = await startFakeHubSpot({ tokens: [TOKEN] });
  t.teardown(() => hs.close());
  hs.owners = [
    { id: '101', email: 'Alice@Example.com', firstName: 'Alice', lastName: 'A', userId: 1 },
    { id: '102', email: 'bob@example.com', firstName: 'Bob', lastName: 'B', userId: 2 },
  ];
  const companies = hs.objects.get('companies')!.records;
  companies.set('5001', { id: '5001', properties: { hs_object_id: '5001', name: 'Acme', domain: 'acme.com' } });
  companies.set('5002', { id: '5002', properties: { hs_object_id: '5002', name: 'Acme Europe', domain: 'acme.com' } });
  companies.set('5003', { id: '5003', properties: { hs_object_id: '5003', name: 'Initech', domain: 'initech.com' } });
});

const fields: DestinationField[] = [
  { name: 'email', type: 'string', required: false, identifier: true },
  { name: 'hubspot_owner_id', type: 'string', required: false, identifier: false },
  { name: 'company_id', type: 'string', required: false, identifier: false },
];
const mappings: MappingSpec[] = [
  { destinationField: 'email', source: { column: 'email' } },
  { destinationField: 'hubspot_owner_id', source: { lookup: { object: 'owners', matchField: 'email', sourceColumn: 'owner_email', resultField: 'id', caseInsensitive: true } } },
  { destinationField: 'company_id', source: { lookup: { object: 'companies', matchField: 'domain', sourceColumn: 'domain', resultField: 'hs_object_id', onMissing: 'skip_field' } } },
];

t.test('owners by e-mail, companies by domain: found, missing, skipped, ambiguous', async (t) => {
  const dest = hubspotType.openDestination!({ baseUrl: hs.url }, { accessToken: TOKEN }, { denyPrivateNetworks: false });
  const resolver = new LookupResolver(mappings, dest);
  const map = compileMappings(mappings, fields, { columns: ['id', 'email', 'owner_email', 'domain'], lookup: resolver.resolve });
  const batch1 = [
    { id: 1, email: 'c1@x.com', owner_email: ' alice@example.COM ', domain: 'initech.com' },
    { id: 2, email: 'c2@x.com', owner_email: 'bob@example.com', domain: 'nowhere.com' },
    { id: 3, email: 'c3@x.com', owner_email: 'carol@example.com', domain: 'initech.com' },
    { id: 4, email: 'c4@x.com', owner_email: 'bob@example.com', domain: 'acme.com' },
    { id: 5, email: 'c5@x.com', owner_email: null, domain: null },
  ];
  const searchesBefore = hs.calls.filter((c) => c.path.endsWith('/search')).length;
  await resolver.prepare(batch1);
  t.equal(hs.calls.filter((c) => c.path.endsWith('/search')).length - searchesBefore, 1, 'the three distinct domains in one search');
  const out = batch1.map(map);
  t.same(out[0], { ok: true, payload: { email: 'c1@x.com', hubspot_owner_id: '101', company_id: '5003' } }, 'case-insensitive e-mail match');
  t.same(out[1], { ok: true, payload: { email: 'c2@x.com', hubspot_owner_id: '102' } }, 'onMissing skip_field leaves the field out');
  t.match(out[2], { ok: false, code: 'lookup_not_found', message: /hubspot_owner_id.*carol@example\.com/ }, 'no owner: the row is invalid with a reason');
  t.match(out[3], { ok: false, code: 'lookup_ambiguous' });
  t.match((out[3] as { message: string }).message, /5001/, 'the reason names the first match');
  t.match((out[3] as { message: string }).message, /5002/, 'and the second');
  t.same(out[4], { ok: true, payload: { email: 'c5@x.com', hubspot_owner_id: null, company_id: null } }, 'null source values are not looked up');

  // A second batch: only values not seen yet reach HubSpot.
  const calls = resolver.calls;
  await resolver.prepare([{ id: 6, email: 'c6@x.com', owner_email: 'ALICE@example.com', domain: 'acme.com' }]);
  t.equal(resolver.calls, calls, 'everything cached: no destination call');
  await resolver.prepare([{ id: 7, email: 'c7@x.com', owner_email: 'alice@example.com', domain: 'new.com' }]);
  t.equal(resolver.calls, calls + 1, 'one call for the one new domain');
});

t.test('values are resolved in batches of the connector size', async (t) => {
  const dest = hubspotType.openDestination!({ baseUrl: hs.url }, { accessToken: TOKEN }, { denyPrivateNetworks: false });
  const resolver = new LookupResolver(mappings, dest);
  const rows = Array.from({ length: 250 }, (_, i) => ({ id: i, email: `r${i}@x.com`, owner_email: null, domain: `d${i}.com` }));
  const before = hs.calls.filter((c) => c.path.endsWith('/search'));
  await resolver.prepare(rows);
  const searches = hs.calls.filter((c) => c.path.endsWith('/search')).slice(before.length);
  t.same(searches.map((s) => s.body.filterGroups[0].filters[0].values.length), [100, 100, 50]);
});

t.test('a destination that cannot look up refuses lookup mappings; mapping without preparing never guesses', async (t) => {
  const pg = postgresType.openDestination!({ host: '127.0.0.1', port: 1, database: 'x', user: 'x' }, {}, { denyPrivateNetworks: false });
  t.throws(() => new LookupResolver(mappings, pg), { code: 'lookup_not_supported' });
  await pg.close();
  const dest = hubspotType.openDestination!({ baseUrl: hs.url }, { accessToken: TOKEN }, { denyPrivateNetworks: false });
  const resolver = new LookupResolver(mappings, dest);
  const map = compileMappings(mappings, fields, { lookup: resolver.resolve });
  t.match(map({ id: 1, email: 'x@x.com', owner_email: 'alice@example.com', domain: null }), { ok: false, code: 'lookup_not_prepared' });
});

t.test('answers keyed by the value as sent (the interface contract) resolve case-insensitive lookups', async (t) => {
  // A connector that keys its answer by the requested spelling, as Salesforce's does.
  const asGiven = {
    capabilities: () => ({ operations: [], modes: [], maxBatchSize: 1, supportsDelete: false }),
    lookup: async (req: { values: string[] }) => new Map(req.values.map((v) => [v, v.trim().toLowerCase() === 'alice@example.com' ? [{ id: '1', value: '001A' }] : []])),
  } as never;
  const specs: MappingSpec[] = [{ destinationField: 'OwnerId', source: { lookup: { object: 'User', matchField: 'Email', sourceColumn: 'o', resultField: 'Id', caseInsensitive: true } } }];
  const r = new LookupResolver(specs, asGiven);
  const map = compileMappings(specs, [], { lookup: r.resolve });
  await r.prepare([{ o: ' Alice@Example.com' }, { o: 'alice@example.com' }, { o: 'bob@example.com' }]);
  t.same(map({ o: 'ALICE@example.com' }), { ok: true, payload: { OwnerId: '001A' } });
  t.match(map({ o: 'bob@example.com' }), { ok: false, code: 'lookup_not_found' });
});
