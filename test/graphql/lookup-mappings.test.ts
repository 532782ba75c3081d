import t from 'tap';
import { deepStrictEqual } from 'node:assert/strict';
import fc from 'fast-check';
import { startTestBackhaul, type TestBackhaul } from '../helpers/backhaul.ts';
import { modelBody, ok, pgConnection, syncBody } from '../helpers/http-fixtures.ts';

// A lookup mapping carries the same options through GraphQL as through REST (object, matchField,
// sourceColumn, resultField, caseInsensitive, onMissing): written through either API, by any of
// their write paths, it reads back identically through both. Properties over every combination
// of the options (set, unset, and, in GraphQL, unset spelled as null).

type Lookup = { object: string; matchField: string; sourceColumn: string; resultField: string; caseInsensitive?: boolean; onMissing?: 'invalid' | 'skip_field' };
const OPTIONAL = ['caseInsensitive', 'onMissing'] as const;
const KEYS = ['object', 'matchField', 'sourceColumn', 'resultField', ...OPTIONAL] as const;

const name = fc.string({ minLength: 1, maxLength: 40 });
const lookupArb: fc.Arbitrary<Lookup> = fc.record(
  { object: name, matchField: name, sourceColumn: name, resultField: name, caseInsensitive: fc.boolean(), onMissing: fc.constantFrom('invalid' as const, 'skip_field' as const) },
  { requiredKeys: ['object', 'matchField', 'sourceColumn', 'resultField'] },
).map((l) => ({ ...l })); // fast-check's records have no prototype; JSON bodies do

const SOURCE = `source { __typename ... on LookupSource { lookup { ${KEYS.join(' ')} } } ... on ColumnSource { column } }`;

/** How GraphQL shows a lookup: every field, null where REST leaves it out. */
const asGraphql = (l: Lookup) => Object.fromEntries(KEYS.map((k) => [k, l[k] ?? null]));
/** A GraphQL lookup input: unset options left out, or (spelled the other way) given as null. */
const asInput = (l: Lookup, nulls: boolean) => (nulls ? asGraphql(l) : l);

let h: TestBackhaul;
let syncId: string;
let pgSyncId: string;

t.before(async () => {
  h = await startTestBackhaul(t);
  const src = await ok(h.request('POST', '/v1/connections', { body: pgConnection('src') }));
  const hub = await ok(h.request('POST', '/v1/connections', { body: { slug: 'hub', name: 'HubSpot', type: 'hubspot', config: {}, secrets: { accessToken: 'pat-x' } } }));
  const model = await ok(h.request('POST', '/v1/models?validate=false', { body: modelBody('m', src.id) }));
  syncId = (await ok(h.request('POST', '/v1/syncs', { body: syncBody('to-hub', model.id, hub.id) }))).id;
  pgSyncId = (await ok(h.request('POST', '/v1/syncs', { body: syncBody('to-pg', model.id, src.id, { object: 'public.contacts' }) }))).id;
});

async function gql(query: string, variables: Record<string, unknown> = {}) {
  const res = await h.request('POST', '/graphql', { body: { query, variables } });
  if (res.status !== 200) throw new Error(`GraphQL answered ${res.status}: ${res.text}`);
  return res.body as { data: any; errors?: { message: string; extensions: Record<string, unknown> }[] };
}

async function gqlData(query: string, variables: Record<string, unknown> = {}) {
  const r = await gql(query, variables);
  if (r.errors) throw new Error(JSON.stringify(r.errors));
  return r.data;
}

/** The set reset to one column mapping of `owner` (so replace and update have something to change). */
async function reset(): Promise<string> {
  const set = await ok(h.request('PUT', `/v1/syncs/${syncId}/mappings`, { body: [{ destinationField: 'owner', source: { column: 'email' } }] }), 200);
  return set.data[0].id;
}

type GraphqlWrite = 'createMapping' | 'replaceMapping' | 'updateMapping' | 'setMappings' | 'createSync' | 'updateSync' | 'replaceSync';
const GRAPHQL_WRITES: GraphqlWrite[] = ['createMapping', 'replaceMapping', 'updateMapping', 'setMappings', 'createSync', 'updateSync', 'replaceSync'];

let created = 0;

/** Writes `owner` ← lookup through one GraphQL write path; answers the sync and the mapping id (and the source the write answered). */
async function writeGraphql(path: GraphqlWrite, lookup: Record<string, unknown>): Promise<{ sync: string; id: string; answered: unknown }> {
  const existing = await reset();
  const mapping = { destinationField: 'owner', source: { lookup } };
  const syncInput = { name: 'Sync', modelId: 'm', destinationId: 'hub', object: 'contacts', mode: 'upsert', matchKey: { sourceColumn: 'email', destinationField: 'email' }, mappings: [mapping] };
  const onSync = (s: { id: string; mappings: { id: string; destinationField: string; source: unknown }[] }) => {
    const m = s.mappings.find((x) => x.destinationField === 'owner')!;
    return { sync: s.id, id: m.id, answered: m.source };
  };
  const SYNC = `id mappings { id destinationField ${SOURCE} }`;
  switch (path) {
    case 'createMapping': {
      await ok(h.request('PUT', `/v1/syncs/${syncId}/mappings`, { body: [] }), 200);
      const m = (await gqlData(`mutation($s: String!, $i: MappingInput!) { createMapping(syncRef: $s, input: $i) { id ${SOURCE} } }`, { s: syncId, i: mapping })).createMapping;
      return { sync: syncId, id: m.id, answered: m.source };
    }
    case 'replaceMapping': {
      const m = (await gqlData(`mutation($s: String!, $id: ID!, $i: MappingInput!) { replaceMapping(syncRef: $s, id: $id, input: $i) { id ${SOURCE} } }`, { s: syncId, id: existing, i: mapping })).replaceMapping;
      return { sync: syncId, id: m.id, answered: m.source };
    }
    case 'updateMapping': {
      const m = (await gqlData(`mutation($s: String!, $id: ID!, $i: UpdateMappingInput!) { updateMapping(syncRef: $s, id: $id, input: $i) { id ${SOURCE} } }`, { s: syncId, id: existing, i: { source: { lookup } } })).updateMapping;
      return { sync: syncId, id: m.id, answered: m.source };
    }
    case 'setMappings': {
      const [m] = (await gqlData(`mutation($s: String!, $m: [MappingInput!]!) { setMappings(syncRef: $s, mappings: $m) { id ${SOURCE} } }`, { s: syncId, m: [mapping] })).setMappings;
      return { sync: syncId, id: m.id, answered: m.source };
    }
    case 'createSync':
      return onSync((await gqlData(`mutation($i: CreateSyncInput!) { createSync(input: $i) { ${SYNC} } }`, { i: { ...syncInput, slug: `made-${++created}` } })).createSync);
    case 'updateSync':
      return onSync((await gqlData(`mutation($r: String!, $i: UpdateSyncInput!) { updateSync(ref: $r, input: $i) { ${SYNC} } }`, { r: syncId, i: { mappings: [mapping] } })).updateSync);
    case 'replaceSync':
      return onSync((await gqlData(`mutation($r: String!, $i: ReplaceSyncInput!) { replaceSync(ref: $r, input: $i) { sync { ${SYNC} } } }`, { r: `put-${++created}`, i: syncInput })).replaceSync.sync);
  }
}

type RestWrite = 'POST mapping' | 'PUT mapping' | 'PATCH mapping' | 'PUT mappings' | 'PATCH sync';
const REST_WRITES: RestWrite[] = ['POST mapping', 'PUT mapping', 'PATCH mapping', 'PUT mappings', 'PATCH sync'];

/** Writes `owner` ← lookup through one REST write path; answers the mapping id. */
async function writeRest(path: RestWrite, lookup: Lookup): Promise<string> {
  const existing = await reset();
  const mapping = { destinationField: 'owner', source: { lookup } };
  const base = `/v1/syncs/${syncId}/mappings`;
  switch (path) {
    case 'POST mapping':
      await ok(h.request('PUT', base, { body: [] }), 200);
      return (await ok(h.request('POST', base, { body: mapping }))).id;
    case 'PUT mapping':
      return (await ok(h.request('PUT', `${base}/${existing}`, { body: mapping }), 200)).id;
    case 'PATCH mapping':
      return (await ok(h.request('PATCH', `${base}/${existing}`, { body: { source: { lookup } } }), 200)).id;
    case 'PUT mappings':
      return (await ok(h.request('PUT', base, { body: [mapping] }), 200)).data[0].id;
    case 'PATCH sync':
      await ok(h.request('PATCH', `/v1/syncs/${syncId}`, { body: { mappings: [mapping] } }), 200);
      return (await ok(h.request('GET', base), 200)).data.find((m: { destinationField: string }) => m.destinationField === 'owner').id;
  }
}

const restSource = async (sync: string, id: string) => (await ok(h.request('GET', `/v1/syncs/${sync}/mappings/${id}`), 200)).source;
const graphqlSource = async (id: string) => (await gqlData(`query($id: ID!) { node(id: $id) { ... on Mapping { ${SOURCE} } } }`, { id })).node.source;

t.test('written through GraphQL (any write path, unset options absent or null), a lookup reads back identically through REST and GraphQL', async (t) => {
  await fc.assert(
    fc.asyncProperty(lookupArb, fc.constantFrom(...GRAPHQL_WRITES), fc.boolean(), async (lookup, path, nulls) => {
      const w = await writeGraphql(path, asInput(lookup, nulls));
      const expected = { __typename: 'LookupSource', lookup: asGraphql(lookup) };
      deepStrictEqual(w.answered, expected, `${path}: the write answers it`);
      deepStrictEqual(await restSource(w.sync, w.id), { lookup }, `${path}: REST reads exactly what was set, nothing for what was not`);
      deepStrictEqual(await graphqlSource(w.id), expected, `${path}: GraphQL reads it back`);
    }),
    { numRuns: 60 },
  );
  t.pass('60 lookups round-tripped');
});

t.test('written through REST, a lookup read through GraphQL and written back as read reads back identically through REST', async (t) => {
  await fc.assert(
    fc.asyncProperty(lookupArb, fc.constantFrom(...REST_WRITES), async (lookup, path) => {
      const id = await writeRest(path, lookup);
      const read = await graphqlSource(id);
      deepStrictEqual(read, { __typename: 'LookupSource', lookup: asGraphql(lookup) }, `${path}: GraphQL reads every option REST wrote`);
      // What a client does: the output it read, fed back as the input (nulls and all).
      const back = (await gqlData(`mutation($s: String!, $id: ID!, $i: MappingInput!) { replaceMapping(syncRef: $s, id: $id, input: $i) { id } }`, {
        s: syncId,
        id,
        i: { destinationField: 'owner', source: { lookup: read.lookup } },
      })).replaceMapping;
      deepStrictEqual(await restSource(syncId, back.id), { lookup }, `${path}: REST reads back the body it was given`);
    }),
    { numRuns: 60 },
  );
  t.pass('60 lookups round-tripped');
});

t.test('refusals: the same codes and field paths as REST', async (t) => {
  const lookup: Lookup = { object: 'owners', matchField: 'email', sourceColumn: 'email', resultField: 'id', caseInsensitive: true, onMissing: 'skip_field' };
  const rest = await h.request('PUT', `/v1/syncs/${pgSyncId}/mappings`, { body: [{ destinationField: 'email', source: { column: 'email' } }, { destinationField: 'owner', source: { lookup } }] });
  t.equal(rest.status, 422);
  const g = await gql(`mutation($s: String!, $m: [MappingInput!]!) { setMappings(syncRef: $s, mappings: $m) { id } }`, {
    s: pgSyncId,
    m: [{ destinationField: 'email', source: { column: 'email' } }, { destinationField: 'owner', source: { lookup } }],
  });
  t.match(g.errors?.[0].extensions, { code: rest.body.code, status: 422, errors: rest.body.errors });
  t.equal(rest.body.code, 'lookup_not_supported');
  t.same((await ok(h.request('GET', `/v1/syncs/${pgSyncId}/mappings`), 200)).data, [], 'nothing half-applied');

  const bad = await h.request('POST', '/graphql', {
    body: { query: `mutation($s: String!, $i: MappingInput!) { createMapping(syncRef: $s, input: $i) { id } }`, variables: { s: syncId, i: { destinationField: 'x', source: { lookup: { ...lookup, onMissing: 'guess' } } } } },
  });
  t.equal(bad.status, 400, 'an onMissing outside the enum is refused before anything runs');
  t.match(bad.body.errors[0].message, /onMissing/);
});
