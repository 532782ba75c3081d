import t from 'tap';
import { GraphqlApiDestination, type GraphqlDestinationConfig, type GraphqlObjectConfig } from '../../src/connectors/destinations/graphql-api.ts';
import { getConnectorType } from '../../src/connectors/registry.ts';
import type { WriteRequest, WriteRow } from '../../src/connectors/types.ts';
import { startFakeGraphqlApi, type FakeGraphqlApi } from '../fakes/graphql-api.ts';
import { expectCode } from '../fakes/databases.ts';

let api: FakeGraphqlApi;
t.before(async () => {
  api = await startFakeGraphqlApi();
});
t.beforeEach(() => {
  api.contacts.clear();
  api.writes.clear();
  api.requests.length = 0;
  api.canned.length = 0;
  api.maxRootFields = 100;
  api.authStyle = 'http';
});
t.teardown(() => api.close());

const fields = [{ name: 'email', identifier: true, required: true, equality: 'case_insensitive' as const }, { name: 'firstName' }, { name: 'age', type: 'integer' as const }];
const contacts = (operations: GraphqlObjectConfig['operations']): GraphqlObjectConfig => ({ name: 'contacts', label: 'Contacts', fields, operations });
const UPSERT = 'mutation Upsert($input: ContactInput!) { upsertContact(input: $input) { contact { id email } userErrors { field message code } } }';
const CREATE = 'mutation Create($input: ContactInput!) { createContact(input: $input) { id } }';
const UPDATE = 'mutation Update($id: ID!, $input: ContactInput!) { updateContact(id: $id, input: $input) { id } }';
const DELETE = 'mutation Delete($id: ID!) { deleteContact(id: $id) }';
function config(ops: GraphqlObjectConfig['operations'], over: Partial<GraphqlDestinationConfig> = {}): GraphqlDestinationConfig {
  return { url: `${api.url}/graphql`, auth: { type: 'bearer' }, timeoutMs: 5000, objects: [contacts(ops)], ...over };
}
const open = (ops: GraphqlObjectConfig['operations'], over: Partial<GraphqlDestinationConfig> = {}, secrets: Record<string, string> = { token: api.token }) =>
  new GraphqlApiDestination(config(ops, over), secrets, { denyPrivateNetworks: false });
const rowsOf = (payloads: Record<string, unknown>[], ids?: string[]): WriteRow[] => payloads.map((payload, i) => ({ primaryKey: String(i), payload, ...(ids ? { recordId: ids[i] } : {}) }));
const req = (operation: WriteRequest['operation'], rows: WriteRow[]): WriteRequest => ({ object: 'contacts', operation, matchField: 'email', rows });
const people = (n: number, f = (i: number) => `p${i}@x.io`) => Array.from({ length: n }, (_, i) => ({ email: f(i), firstName: `P${i}` }));

t.test('config: documents are checked when the connection opens', async (t) => {
  const bad = (ops: GraphqlObjectConfig['operations']) => t.throws(() => open(ops), { code: 'invalid_config' });
  bad({ insert: { mutation: 'query { contactCount }' } });
  bad({ insert: { mutation: 'mutation { createContact(input: {email: "a"}) { id ' } });
  bad({ insert: { mutation: 'mutation($a: ContactInput!, $b: ContactInput!) { a: createContact(input: $a) { id } b: createContact(input: $b) { id } }', mode: 'batch' } });
  bad({ insert: { mutation: CREATE, variables: { input: '$payloads' } } });
  const d = open({ upsert: { mutation: UPSERT, mode: 'batch' }, delete: { mutation: DELETE, variables: { id: '$recordId' } } });
  await d.test();
  t.same(await d.fields('contacts'), [
    { name: 'email', type: 'string', required: true, identifier: true, equality: 'case_insensitive' },
    { name: 'firstName', type: 'string', required: false, identifier: false },
    { name: 'age', type: 'integer', required: false, identifier: false },
  ]);
  t.match(d.capabilities(), { operations: ['upsert', 'delete'], modes: ['upsert', 'mirror'], supportsDelete: true });
  const type = getConnectorType('graphql')!;
  t.same(type.roles, ['destination']);
  t.ok(type.openDestination!(config({ insert: { mutation: CREATE } }), { token: api.token }, { denyPrivateNetworks: false }));
});

t.test('batch mode: a full sync of 250 rows as aliased mutations, then a 1% change by id', async (t) => {
  const d = open({
    upsert: { mutation: UPSERT, mode: 'batch', batchSize: 50, idPath: 'contact.id', userErrorsPath: 'userErrors' },
    update: { mutation: UPDATE, mode: 'batch', batchSize: 50, variables: { id: '$recordId', input: '$payload' } },
  });
  const first = await d.write(req('upsert', rowsOf(people(250))));
  t.ok(first.results.every((r) => r.status === 'succeeded' && /^c\d+$/.test(r.externalId ?? '')));
  t.equal(api.contacts.size, 250);
  t.same(api.requests.map((r) => r.rootFields), [50, 50, 50, 50, 50], 'five requests of 50 aliased mutations');
  const ids = first.results.map((r) => (r.status === 'succeeded' ? r.externalId! : ''));
  t.equal(api.contacts.get(ids[137])?.email, 'p137@x.io', 'each id is its own row\'s record');
  api.requests.length = 0;
  const changed = [3, 150];
  const second = await d.write(req('update', rowsOf(changed.map((i) => ({ email: `p${i}@x.io`, firstName: 'Changed' })), changed.map((i) => ids[i]))));
  t.same(second.results, changed.map((i) => ({ status: 'succeeded', externalId: ids[i] })));
  t.same(api.requests.map((r) => r.rootFields), [2]);
  t.equal(api.contacts.get(ids[150])?.firstName, 'Changed');
  t.equal(api.contacts.get(ids[151])?.firstName, 'P151');
});

t.test('batch mode: field errors land on their rows by alias; user errors too; every good row written once', async (t) => {
  const d = open({ insert: { mutation: CREATE, mode: 'batch', batchSize: 100 }, upsert: { mutation: UPSERT, mode: 'batch', idPath: 'contact.id', userErrorsPath: 'userErrors' } });
  const payloads: Record<string, unknown>[] = people(60);
  payloads[4].email = 'broken';
  payloads[31].email = 'throttle31@x.io';
  payloads[59].email = 'p0@x.io'; // a duplicate of row 0: refused by the API
  const res = await d.write(req('insert', rowsOf(payloads)));
  const rejected = res.results.flatMap((r, i) => (r.status === 'rejected' ? [[i, r.code, r.message, r.retryable]] : []));
  t.same(rejected, [
    [4, 'BAD_USER_INPUT', 'email "broken" is invalid', false],
    [31, 'THROTTLED', 'Too many writes to this record, slow down', true],
    [59, 'CONFLICT', 'a contact with email p0@x.io already exists', false],
  ]);
  t.equal(api.contacts.size, 57);
  t.ok([...api.writes.values()].every((n) => n === 1));
  const up = await d.write(req('upsert', rowsOf([{ email: 'fine@x.io' }, { email: 'nope' }])));
  t.same(up.results[1], { status: 'rejected', code: 'INVALID', message: 'Email is invalid (input.email)', retryable: false });
  t.equal(up.results[0].status, 'succeeded');
});

t.test('batch mode: a row whose values do not fit the variable types is rejected, the others sent again', async (t) => {
  const d = open({ insert: { mutation: CREATE, mode: 'batch' } });
  const payloads: Record<string, unknown>[] = people(5);
  payloads[2].age = 'old';
  const res = await d.write(req('insert', rowsOf(payloads)));
  t.match(res.results[2], { status: 'rejected', code: 'invalid_variables', message: /^Variable "\$input" got invalid value "old" at "input\.age"; Int cannot represent non-integer value: "old"/ });
  t.same(res.results.filter((r) => r.status === 'succeeded').length, 4);
  t.same(api.requests.map((r) => [r.status, r.rootFields]), [[400, 5], [200, 4]], 'the request error answered 400 (graphql-response+json); the rest went again without row 2');
  t.ok([...api.writes.values()].every((n) => n === 1));
});

t.test('a request error of the document is fatal with the server\'s message', async (t) => {
  const d = open({ insert: { mutation: 'mutation($input: ContactInput!) { createContact(input: $input) { id nickname } }', mode: 'batch' } });
  const err = await expectCode(t, d.write(req('insert', rowsOf(people(3)))), 'graphql_request_error');
  t.equal(err.classification, 'fatal');
  t.match(err.message, /Cannot query field "nickname" on type "Contact"/);
  t.equal(api.contacts.size, 0);
  // The same under application/json: 200 with errors and no data.
  api.canned.push({ status: 200, body: { errors: [{ message: 'Unknown type "ContactInputX".' }] } });
  await expectCode(t, open({ insert: { mutation: CREATE } }).write(req('insert', rowsOf(people(1)))), 'graphql_request_error');
  // A batch larger than the API allows per document: the API's own message says so.
  api.maxRootFields = 20;
  const big = await expectCode(t, open({ insert: { mutation: CREATE, mode: 'batch', batchSize: 50 } }).write(req('insert', rowsOf(people(50)))), 'graphql_request_error');
  t.match(big.message, /50 root fields, more than the 20 allowed/);
  const ok = await open({ insert: { mutation: CREATE, mode: 'batch', batchSize: 20 } }).write(req('insert', rowsOf(people(50))));
  t.ok(ok.results.every((r) => r.status === 'succeeded'));
  t.same(api.requests.slice(-3).map((r) => r.rootFields), [20, 20, 10]);
});

t.test('batch mode: a failed non-null mutation field discards the results of the request', async (t) => {
  const d = open({ insert: { mutation: 'mutation($input: ContactInput!) { createContactStrict(input: $input) { id } }', mode: 'batch' } });
  const payloads: Record<string, unknown>[] = people(4);
  payloads[1].email = 'broken';
  const res = await d.write(req('insert', rowsOf(payloads)));
  t.match(res.results[1], { status: 'rejected', code: 'BAD_USER_INPUT', retryable: false });
  for (const i of [0, 2, 3]) t.match(res.results[i], { status: 'rejected', code: 'result_discarded', retryable: true });
});

t.test('row mode: one request per row, row errors, deletes of missing records, variable errors', async (t) => {
  const d = open({ insert: { mutation: CREATE }, delete: { mutation: DELETE, variables: { id: '$recordId' } } }, { rowConcurrency: 2 });
  const payloads: Record<string, unknown>[] = people(3);
  payloads[1].email = 'nope';
  payloads[2].age = 3.5;
  const res = await d.write(req('insert', rowsOf(payloads)));
  t.match(res.results, [
    { status: 'succeeded', externalId: /^c\d+$/ },
    { status: 'rejected', code: 'BAD_USER_INPUT', message: 'email "nope" is invalid' },
    { status: 'rejected', code: 'invalid_variables', message: /^Variable "\$input" got invalid value 3\.5 at "input\.age"/ },
  ]);
  t.equal(api.requests.length, 3);
  const id = res.results[0].status === 'succeeded' ? res.results[0].externalId! : '';
  const del = await d.write(req('delete', rowsOf([{ email: 'p0@x.io' }, { email: 'gone@x.io' }], [id, 'c999'])));
  t.same(del.results, [{ status: 'succeeded' }, { status: 'succeeded' }], 'NOT_FOUND on delete: already gone');
  t.equal(api.contacts.size, 0);
});

t.test('HTTP failures are classified as for REST; auth as the HTTP destination\'s', async (t) => {
  const ops = { insert: { mutation: CREATE, mode: 'batch' as const, batchSize: 10 } };
  api.canned.push({ status: 429, headers: { 'retry-after': '12' }, body: { errors: [{ message: 'rate limited' }] } });
  const e429 = await expectCode(t, open(ops).write(req('insert', rowsOf(people(2)))), 'rate_limited');
  t.equal(e429.classification, 'retryable');
  t.equal((e429 as { retryAfterMs?: number }).retryAfterMs, 12_000);
  api.canned.push({ status: 503, raw: '<html>upstream down</html>' });
  await expectCode(t, open(ops).write(req('insert', rowsOf(people(2)))), 'destination_unavailable');
  const e401 = await expectCode(t, open(ops, {}, { token: 'wrong' }).write(req('insert', rowsOf(people(2)))), 'auth_failed');
  t.equal(e401.classification, 'fatal');
  api.authStyle = 'graphql';
  await expectCode(t, open(ops, {}, { token: 'wrong' }).write(req('insert', rowsOf(people(2)))), 'auth_failed');
  t.equal(api.contacts.size, 0);
  // A failure after a first request succeeded keeps the rows written.
  api.authStyle = 'http';
  api.canned.push({ status: 503, body: { errors: [{ message: 'busy' }] }, headers: { 'retry-after': '2' }, skip: 1 });
  const res = await open(ops).write(req('insert', rowsOf(people(20))));
  t.ok(res.results.slice(0, 10).every((r) => r.status === 'succeeded'));
  t.ok(res.results.slice(10).every((r) => r.status === 'rejected' && r.retryable && r.code === 'not_attempted'));
  t.equal(res.retryAfterMs, 2000);
  t.equal(api.contacts.size, 10);
  // OAuth2 client credentials (http-auth.ts), token fetched once and reused.
  const oauth = open(ops, { auth: { type: 'oauth2_client_credentials', tokenUrl: `${api.url}/oauth/token`, clientId: api.clientId } }, { clientSecret: api.clientSecret });
  const before = api.tokensIssued;
  t.ok((await oauth.write(req('insert', rowsOf(people(15, (i) => `o${i}@x.io`))))).results.every((r) => r.status === 'succeeded'));
  t.equal(api.tokensIssued - before, 1);
  const header = open(ops, { auth: { type: 'header', headerName: 'authorization' } }, { headerValue: `Bearer ${api.token}` });
  t.equal((await header.write(req('insert', rowsOf([{ email: 'h@x.io' }])))).results[0].status, 'succeeded');
});
