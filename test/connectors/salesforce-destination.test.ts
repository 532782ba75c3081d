import t from 'tap';
import { SalesforceDestination, type SalesforceConfig } from '../../src/connectors/destinations/salesforce.ts';
import type { SalesforceSession, SalesforceTokenSource } from '../../src/connectors/destinations/salesforce-client.ts';
import { getConnectorType } from '../../src/connectors/registry.ts';
import type { WriteRequest, WriteRow } from '../../src/connectors/types.ts';
import { ConnectorError } from '../../src/errors.ts';
import { startFakeSalesforce, type FakeSalesforce } from '../fakes/salesforce.ts';
import { expectCode } from '../fakes/databases.ts';

let sf: FakeSalesforce;
t.before(async () => {
  sf = await startFakeSalesforce();
});
t.beforeEach(() => {
  for (const m of sf.records.values()) m.clear();
  sf.deleted.clear();
  sf.log.length = 0;
  sf.canned.length = 0;
  sf.apiLimit = Infinity;
  sf.apiUsed = 0;
  sf.validate = undefined;
  sf.queryPageSize = 2000;
  sf.holdBulk = false;
  sf.onJobPoll = undefined;
});
t.teardown(() => sf.close());

const config = (over: Partial<SalesforceConfig> = {}): SalesforceConfig => ({ instanceUrl: sf.url, apiVersion: 'v62.0', timeoutMs: 20_000, bulkPollIntervalMs: 5, bulkPollMaxIntervalMs: 20, ...over });
const open = (over: Partial<SalesforceConfig> = {}, tokens?: SalesforceTokenSource) => new SalesforceDestination(config(over), { accessToken: sf.issueToken() }, { denyPrivateNetworks: false }, tokens);
const contact = (i: number, over: Record<string, unknown> = {}) => ({ External_Id__c: `ext-${i}`, LastName: `Last ${i}`, FirstName: `First ${i}`, Email: `user${i}@example.com`, ...over });
const rowsOf = (payloads: Record<string, unknown>[], ids?: (string | undefined)[]): WriteRow[] =>
  payloads.map((payload, i) => ({ primaryKey: String(i + 1), payload, ...(ids?.[i] ? { recordId: ids[i] } : {}) }));
const req = (operation: WriteRequest['operation'], rows: WriteRow[], over: Partial<WriteRequest> = {}): WriteRequest => ({ object: 'Contact', operation, matchField: 'External_Id__c', rows, ...over });
const writes = () => sf.log.filter((l) => l.path.startsWith('/composite/sobjects'));

/** Stands in for the shared token manager: refreshes through the org's token endpoint. */
function refreshingTokens(): SalesforceTokenSource & { refreshes: number } {
  let session: SalesforceSession = { accessToken: sf.issueToken(), instanceUrl: sf.url };
  const src = {
    refreshes: 0,
    getToken: async () => session,
    onUnauthorized: async () => {
      src.refreshes++;
      const body = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: sf.refreshToken, client_id: sf.clientId, client_secret: sf.clientSecret });
      const res = await fetch(`${sf.url}/services/oauth2/token`, { method: 'POST', body });
      const j = (await res.json()) as { access_token: string; instance_url: string };
      session = { accessToken: j.access_token, instanceUrl: j.instance_url };
      return session;
    },
  };
  return src;
}

t.test('discovery: writable objects, fields from describe with identifiers, equality, required and picklists', async (t) => {
  const d = open();
  await d.test();
  const objects = await d.objects();
  t.same(objects.map((o) => o.name), ['Contact', 'Account', 'User'], 'ApexLog (neither createable nor updateable) is left out');
  const fields = await d.fields('Contact');
  const by = new Map(fields.map((f) => [f.name, f]));
  t.notOk(by.has('Name'), 'read-only fields are left out');
  t.notOk(by.has('CreatedDate'));
  t.same(by.get('Id'), { name: 'Id', type: 'string', required: false, identifier: true, equality: 'exact' });
  t.same(by.get('Email'), { name: 'Email', type: 'string', required: false, identifier: true, equality: 'case_insensitive' });
  t.same(by.get('External_Id__c'), { name: 'External_Id__c', type: 'string', required: false, identifier: true, equality: 'case_insensitive' });
  t.same(by.get('LastName'), { name: 'LastName', type: 'string', required: true, identifier: false });
  t.same(by.get('HasOptedOutOfEmail'), { name: 'HasOptedOutOfEmail', type: 'boolean', required: false, identifier: false }, 'non-nillable but defaulted on create: not required');
  t.same(by.get('LeadSource')?.allowedValues, ['Web', 'Phone Inquiry', 'Partner Referral', 'Other']);
  t.equal(by.get('Score__c')?.type, 'decimal');
  t.equal(by.get('Birthdate')?.type, 'date');
  const account = new Map((await d.fields('Account')).map((f) => [f.name, f]));
  t.same(account.get('Account_Key__c')?.equality, 'exact', 'a case-sensitive external id compares exactly');
  t.equal(account.get('AnnualRevenue')?.type, 'decimal');
  await expectCode(t, d.fields('Nope__c'), 'object_not_found');
  await expectCode(t, d.fields('Contact; DROP'), 'invalid_name');
  await expectCode(t, open({ apiVersion: 'v12.0' }).test(), 'api_version_not_supported');
  t.match(d.capabilities(), { maxBatchSize: 200, supportsDelete: true, modes: ['insert', 'update', 'upsert', 'mirror'], bulk: { threshold: 10_000 } });
});

t.test('a full sync of 1,000 rows, then a 1% change and deletes, through sObject Collections', async (t) => {
  const d = open();
  const payloads = Array.from({ length: 1000 }, (_, i) => contact(i));
  const first = await d.write(req('upsert', rowsOf(payloads)));
  t.equal(first.results.length, 1000);
  t.ok(first.results.every((r) => r.status === 'succeeded' && /^003/.test(r.externalId ?? '')), 'every row succeeded with its Salesforce Id');
  t.equal(sf.all('Contact').length, 1000);
  t.equal(writes().length, 5, 'five requests of 200');
  t.ok(writes().every((w) => w.method === 'PATCH' && w.path.startsWith('/composite/sobjects/Contact/External_Id__c') && w.records! <= 200));
  const ids = first.results.map((r) => (r.status === 'succeeded' ? r.externalId : undefined));
  t.equal(new Set(ids).size, 1000);
  // Each Id is the record of its own row.
  for (const i of [0, 499, 999]) t.equal(sf.records.get('Contact')!.get(ids[i]!)!.External_Id__c, `ext-${i}`);

  // 1%: ten rows changed; the engine knows their Ids from the snapshot, so they are updated by Id.
  sf.log.length = 0;
  const changed = Array.from({ length: 10 }, (_, k) => k * 100);
  const second = await d.write(req('upsert', rowsOf(changed.map((i) => contact(i, { FirstName: `Changed ${i}` })), changed.map((i) => ids[i]))));
  t.same(second.results, changed.map((i) => ({ status: 'succeeded', externalId: ids[i] })));
  t.equal(writes().length, 1);
  t.match(writes()[0], { method: 'PATCH', path: '/composite/sobjects', records: 10 }, 'update by Id, one request');
  t.equal(sf.records.get('Contact')!.get(ids[300]!)!.FirstName, 'Changed 300');
  t.equal(sf.records.get('Contact')!.get(ids[301]!)!.FirstName, 'First 301');
  t.equal(sf.all('Contact').length, 1000, 'nothing created');

  // Mirror deletes: by Id.
  sf.log.length = 0;
  const gone = [1, 2, 3];
  const del = await d.write(req('delete', rowsOf(gone.map((i) => ({ External_Id__c: `ext-${i}` })), gone.map((i) => ids[i]))));
  t.same(del.results.map((r) => r.status), ['succeeded', 'succeeded', 'succeeded']);
  t.equal(sf.all('Contact').length, 997);
  t.match(writes()[0], { method: 'DELETE', records: 3 });
});

t.test('per-row errors land on the right rows with Salesforce\'s own code and message', async (t) => {
  const d = open();
  sf.validate = (_o, r) => (r.FirstName === 'Blocked' ? 'First name may not be Blocked.' : undefined);
  const payloads: Record<string, unknown>[] = Array.from({ length: 450 }, (_, i) => contact(i));
  payloads[3] = contact(3, { Email: 'not-an-email' });
  payloads[250] = { External_Id__c: 'ext-250', FirstName: 'No last name' };
  payloads[251] = contact(251, { LeadSource: 'Carrier pigeon' });
  payloads[449] = contact(449, { FirstName: 'Blocked' });
  payloads[120] = contact(120, { Score__c: 'abc' }); // a type error: Salesforce refuses its whole request (JSON_PARSER_ERROR)
  const res = await d.write(req('upsert', rowsOf(payloads)));
  const rejected = res.results.flatMap((r, i) => (r.status === 'rejected' ? [[i, r.code, r.message]] : []));
  t.same(rejected, [
    [3, 'INVALID_EMAIL_ADDRESS', 'Email: invalid email address: not-an-email (fields: Email)'],
    [120, 'JSON_PARSER_ERROR', 'Cannot deserialize instance of double from VALUE_STRING value abc at [line:1, column:1]'],
    [250, 'REQUIRED_FIELD_MISSING', 'Required fields are missing: [LastName] (fields: LastName)'],
    [251, 'INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST', 'LeadSource: bad value for restricted picklist field: Carrier pigeon (fields: LeadSource)'],
    [449, 'FIELD_CUSTOM_VALIDATION_EXCEPTION', 'First name may not be Blocked.'],
  ]);
  t.equal(res.results.filter((r) => r.status === 'succeeded').length, 445);
  t.equal(sf.all('Contact').length, 445, 'the bisected request wrote every good row exactly once');
  t.ok(res.exchanges?.some((e) => e.rowIndexes?.length === 1 && e.rowIndexes[0] === 120), 'the row debugger sees the request that isolated row 120');
  t.notOk(JSON.stringify(res.exchanges).includes('00D000000000001!'), 'the access token is redacted from exchanges');
});

t.test('update and delete without a known Id look the Id up by the match field first', async (t) => {
  const d = open();
  const a = sf.insert('Contact', { LastName: 'A', External_Id__c: 'EXT-A', Email: 'a@x.io' });
  sf.insert('Contact', { LastName: 'B1', Email: 'dup@x.io' });
  sf.insert('Contact', { LastName: 'B2', Email: 'DUP@x.io' });
  const up = await d.write(req('update', rowsOf([{ External_Id__c: 'ext-a', FirstName: 'Ada' }, { External_Id__c: 'missing', FirstName: 'X' }])));
  t.same(up.results[0], { status: 'succeeded', externalId: a }, 'matched case-insensitively, as Salesforce compares this external id');
  t.match(up.results[1], { status: 'rejected', code: 'not_found', retryable: false });
  t.equal(sf.records.get('Contact')!.get(a)!.FirstName, 'Ada');
  const del = await d.write(req('delete', rowsOf([{ Email: 'dup@x.io' }, { Email: 'nobody@x.io' }, { Email: 'a@x.io' }]), { matchField: 'Email' }));
  t.match(del.results[0], { status: 'rejected', code: 'ambiguous_match', message: /2 Contact records have Email = "dup@x.io": 003\w+, 003\w+/ });
  t.same(del.results[1], { status: 'succeeded' }, 'nothing to delete');
  t.same(del.results[2], { status: 'succeeded', externalId: a });
  t.notOk(sf.records.get('Contact')!.has(a));
  // A record deleted in Salesforce: delete by Id is already done.
  const again = await d.write(req('delete', rowsOf([{ External_Id__c: 'EXT-A' }], [a])));
  t.same(again.results, [{ status: 'succeeded' }]);
});

t.test('an upsert whose known record was deleted in Salesforce recreates it by the external id', async (t) => {
  const d = open();
  const id = sf.insert('Contact', { LastName: 'Gone', External_Id__c: 'ext-9' });
  sf.records.get('Contact')!.delete(id);
  sf.deleted.add(id);
  const res = await d.write(req('upsert', rowsOf([contact(9)], [id])));
  t.equal(res.results[0].status, 'succeeded');
  const newId = res.results[0].status === 'succeeded' ? res.results[0].externalId : '';
  t.not(newId, id);
  t.equal(sf.records.get('Contact')!.get(newId!)!.External_Id__c, 'ext-9');
});

t.test('INVALID_SESSION_ID: one refresh, one retry, for all requests in flight', async (t) => {
  const tokens = refreshingTokens();
  const d = open({}, tokens);
  await d.write(req('insert', rowsOf([contact(1)])));
  sf.expireTokens();
  const issued = sf.tokensIssued;
  const results = await Promise.all([0, 1, 2, 3].map((k) => d.write(req('upsert', rowsOf([contact(10 + k)])))));
  t.ok(results.every((r) => r.results[0].status === 'succeeded'));
  t.equal(tokens.refreshes, 1, 'four batches in flight saw the expired token; one refresh');
  t.equal(sf.tokensIssued, issued + 1);
  t.equal(sf.log.filter((l) => l.status === 401).length, 4, 'each request was retried once after the refresh');
  // A token that cannot be refreshed fails fatally.
  const staticOne = open();
  sf.expireTokens();
  const err = await expectCode(t, staticOne.write(req('upsert', rowsOf([contact(20)]))), 'auth_failed');
  t.equal((err as ConnectorError).classification, 'fatal');
});

t.test('limits: REQUEST_LIMIT_EXCEEDED waits long, 503 retries, a failure mid-batch keeps the rows written', async (t) => {
  const d = open({ requestLimitBackoffMs: 900_000 });
  sf.apiLimit = 0;
  const e1 = (await expectCode(t, d.write(req('upsert', rowsOf([contact(1)]))), 'rate_limited')) as ConnectorError;
  t.equal(e1.classification, 'retryable');
  t.equal(e1.retryAfterMs, 900_000, 'the rolling 24-hour allocation is not hammered');
  t.match(e1.hint, /api-usage=1\/0/);
  sf.apiLimit = Infinity;
  sf.canned.push({ status: 503, body: [{ errorCode: 'SERVER_UNAVAILABLE', message: 'Server temporarily unavailable' }], headers: { 'retry-after': '7' }, pathPrefix: '/composite' });
  const e2 = (await expectCode(t, d.write(req('upsert', rowsOf([contact(1)]))), 'destination_unavailable')) as ConnectorError;
  t.equal(e2.retryAfterMs, 7000);
  t.equal(sf.all('Contact').length, 0);
  // 400 rows: the first request of 200 succeeds, the second is throttled: the first 200 are kept.
  let n = 0;
  sf.validate = () => {
    if (++n === 200) sf.canned.push({ status: 503, body: [{ errorCode: 'SERVER_UNAVAILABLE', message: 'busy' }], headers: { 'retry-after': '3' }, pathPrefix: '/composite' });
    return undefined;
  };
  const res = await d.write(req('upsert', rowsOf(Array.from({ length: 400 }, (_, i) => contact(i)))));
  t.ok(res.results.slice(0, 200).every((r) => r.status === 'succeeded'));
  t.ok(res.results.slice(200).every((r) => r.status === 'rejected' && r.code === 'not_attempted' && r.retryable));
  t.equal(res.retryAfterMs, 3000);
});

t.test('a mapped field that does not exist fails the run with Salesforce\'s message', async (t) => {
  const err = (await expectCode(t, open().write(req('upsert', rowsOf([contact(1, { Favourite_Colour__c: 'red' })]))), 'invalid_field')) as ConnectorError;
  t.equal(err.classification, 'fatal');
  t.match(err.message, /No such column 'Favourite_Colour__c' on sobject of type Contact/);
  await expectCode(t, open().write(req('upsert', rowsOf([contact(1)]), { matchField: 'LastName' })), 'object_not_found');
});

t.test('lookup: SOQL batched and paged, escaped, every match returned', async (t) => {
  const d = open();
  const u1 = sf.insert('User', { Username: 'ada@corp', Email: 'Ada@Example.com' });
  const u2 = sf.insert('User', { Username: 'ada2@corp', Email: 'ada@example.com' });
  const u3 = sf.insert('User', { Username: "o'brien@corp", Email: "o'brien\\x@example.com" });
  const many = Array.from({ length: 1500 }, (_, i) => `nobody${i}@example.com`);
  sf.queryPageSize = 1;
  const res = await d.lookup({ object: 'User', matchField: 'Email', resultField: 'Id', values: ['ada@example.com', "o'brien\\x@example.com", 'x@y.z', ...many], caseInsensitive: true });
  t.same(res.get('ada@example.com')?.map((m) => m.id).sort(), [u1, u2].sort(), 'both matches: the engine refuses the ambiguity');
  t.same(res.get("o'brien\\x@example.com"), [{ id: u3, value: u3 }], 'quotes and backslashes are escaped');
  t.same(res.get('x@y.z'), []);
  t.equal(res.size, 1503);
  t.ok(sf.count('queries') > 1, 'values are split over several statements');
  t.ok(sf.log.some((l) => l.path.startsWith('/query/')), 'pages followed by nextRecordsUrl');
  const exact = await d.lookup({ object: 'User', matchField: 'Email', resultField: 'Username', values: ['ada@example.com'] });
  t.same(exact.get('ada@example.com'), [{ id: u2, value: 'ada2@corp' }], 'without caseInsensitive only the exact value matches');
  await expectCode(t, d.lookup({ object: 'User', matchField: 'Email) OR Id != (', resultField: 'Id', values: ['x'] }), 'invalid_name');
  await expectCode(t, d.lookup({ object: 'User', matchField: 'Nope__c', resultField: 'Id', values: ['x'] }), 'lookup_failed');
});

t.test('the catalog entry validates and opens the connector', async (t) => {
  const type = getConnectorType('salesforce')!;
  t.ok(type, 'registered');
  t.same(type.roles, ['destination']);
  t.match(type.capabilities, { maxBatchSize: 200, bulk: { threshold: 10_000 } });
  t.ok(type.secrets.some((s) => s.name === 'accessToken'));
  const d = type.openDestination!({ instanceUrl: sf.url }, { accessToken: sf.issueToken() }, { denyPrivateNetworks: false });
  await d.test();
  await expectCode(t, type.openDestination!({}, { accessToken: 'x' }, { denyPrivateNetworks: false }).test(), 'invalid_config');
});
