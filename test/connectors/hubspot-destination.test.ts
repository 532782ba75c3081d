import t from 'tap';
import { hubspotType } from '../../src/connectors/destinations/hubspot-type.ts';
import { nextMidnight } from '../../src/connectors/destinations/hubspot.ts';
import type { DestinationConnector, WriteRow } from '../../src/connectors/types.ts';
import { BatchRejectedError, ConnectorError } from '../../src/errors.ts';
import { startFakeHubSpot, type FakeHubSpot } from '../fakes/hubspot.ts';

// The HubSpot destination against a local fake of the CRM v3 API (test/fakes/hubspot.ts).

const TOKEN = 'pat-na1-test-token';
let hs: FakeHubSpot;

t.before(async () => {
  hs = await startFakeHubSpot({
    tokens: [TOKEN],
    customObjects: [{ name: 'cars', properties: [{ name: 'vin', type: 'string', hasUniqueValue: true }, { name: 'model', type: 'string' }], requiredProperties: ['vin'] }],
  });
  t.teardown(() => hs.close());
});

function open(secrets: Record<string, string> = { accessToken: TOKEN }, config: Record<string, unknown> = {}): DestinationConnector {
  return hubspotType.openDestination!({ baseUrl: hs.url, ...config }, secrets, { denyPrivateNetworks: false });
}

const contact = (i: number, extra: Record<string, unknown> = {}): WriteRow => ({ primaryKey: String(i), payload: { email: `user${i}@example.com`, firstname: `User ${i}`, ...extra } });
const batchCalls = (kind: string) => hs.calls.filter((c) => c.path.endsWith(`/batch/${kind}`));

t.test('objects and fields come from the schemas and properties APIs', async (t) => {
  const d = open();
  const objects = await d.objects();
  t.same(objects.map((o) => o.name), ['contacts', 'companies', 'deals', 'tickets', 'p12345_cars']);
  const fields = await d.fields('contacts');
  const email = fields.find((f) => f.name === 'email')!;
  t.match(email, { type: 'string', identifier: true, equality: 'case_insensitive' }, 'e-mail identifies a contact, compared case-insensitively');
  t.match(fields.find((f) => f.name === 'num_employees'), { type: 'decimal', identifier: false });
  t.match(fields.find((f) => f.name === 'hs_object_id'), { identifier: true }, 'the record id is usable as a match key');
  t.notOk(fields.some((f) => f.name === 'createdate'), 'read-only properties are not offered');
  const cars = await d.fields('p12345_cars');
  t.match(cars.find((f) => f.name === 'vin'), { identifier: true, required: true }, 'hasUniqueValue → identifier; required from the schema');
  t.match(cars.find((f) => f.name === 'model'), { identifier: false, required: false });
  t.equal(d.capabilities().maxBatchSize, 100);
  t.equal(d.capabilities().defaultMaxRequestsPerSecond, 10);
  t.ok(d.capabilities().lookup);
});

t.test('upsert by e-mail: at most 100 inputs per request, every row gets its HubSpot id, whatever the order of the answer', async (t) => {
  const d = open();
  hs.reverseResults = true;
  t.teardown(() => void (hs.reverseResults = false));
  const before = batchCalls('upsert').length;
  const rows = Array.from({ length: 250 }, (_, i) => contact(i));
  const res = await d.write({ object: 'contacts', operation: 'upsert', matchField: 'email', rows });
  const calls = batchCalls('upsert').slice(before);
  t.same(calls.map((c) => c.body.inputs.length), [100, 100, 50], 'split in requests of at most 100');
  t.ok(calls[0].body.inputs.every((i: any) => i.idProperty === 'email' && typeof i.objectWriteTraceId === 'string'));
  t.equal(res.results.length, 250);
  const contacts = hs.objects.get('contacts')!.records;
  res.results.forEach((r, i) => {
    t.equal(r.status, 'succeeded');
    const id = (r as { externalId?: string }).externalId!;
    t.equal(contacts.get(id)?.properties.email, `user${i}@example.com`, `row ${i} carries the id of its own record`);
  });
  // The same e-mails differently cased update the same records.
  const again = await d.write({ object: 'contacts', operation: 'upsert', matchField: 'email', rows: rows.slice(0, 3).map((r) => ({ ...r, payload: { ...r.payload, email: ` USER${r.primaryKey}@Example.com`.trim() } })) });
  t.same(again.results.map((r) => (r as { externalId?: string }).externalId), res.results.slice(0, 3).map((r) => (r as { externalId?: string }).externalId));
  t.equal(contacts.size, 250, 'no duplicates');
});

t.test('per-row errors of a 207 land on the right rows', async (t) => {
  const d = open();
  hs.reverseResults = true;
  hs.reject = (_o, p) => (p.firstname?.startsWith('Bad') ? `Property "firstname" value ${p.firstname} is not allowed` : undefined);
  t.teardown(() => {
    hs.reverseResults = false;
    hs.reject = undefined;
  });
  const rows = Array.from({ length: 10 }, (_, i) => contact(500 + i, i % 3 === 0 ? { firstname: `Bad ${i}` } : {}));
  const res = await d.write({ object: 'contacts', operation: 'upsert', matchField: 'email', rows });
  res.results.forEach((r, i) => {
    if (i % 3 === 0) t.match(r, { status: 'rejected', code: 'hubspot_validation_error', message: new RegExp(`Bad ${i}\\b`), retryable: false }, `row ${i} rejected with its own reason`);
    else t.match(r, { status: 'succeeded', externalId: /^\d+$/ }, `row ${i} succeeded`);
  });
  t.ok(res.exchanges?.length, 'the exchange is kept for the row debugger');
  t.notOk(JSON.stringify(res.exchanges).includes(TOKEN), 'without the token');
});

t.test('update by unique property: records that do not exist are rejected by the ids HubSpot names', async (t) => {
  const d = open();
  await d.write({ object: 'contacts', operation: 'upsert', matchField: 'email', rows: [contact(900), contact(902)] });
  const rows = [contact(900, { firstname: 'A' }), contact(901, { firstname: 'B' }), contact(902, { firstname: 'C' }), contact(903, { firstname: 'D' })];
  const res = await d.write({ object: 'contacts', operation: 'update', matchField: 'email', rows });
  t.match(res.results, [
    { status: 'succeeded', externalId: /\d/ },
    { status: 'rejected', code: 'hubspot_object_not_found' },
    { status: 'succeeded', externalId: /\d/ },
    { status: 'rejected', code: 'hubspot_object_not_found' },
  ]);
  // With the record id known, the update addresses the record by id.
  const id = (res.results[0] as { externalId: string }).externalId;
  const before = batchCalls('update').length;
  const byId = await d.write({ object: 'contacts', operation: 'update', matchField: 'email', rows: [{ ...contact(900, { firstname: 'Z' }), recordId: id }] });
  t.match(byId.results, [{ status: 'succeeded', externalId: id }]);
  const sent = batchCalls('update')[before].body.inputs[0];
  t.equal(sent.id, id);
  t.notOk('idProperty' in sent, 'by record id');
  t.equal(hs.objects.get('contacts')!.records.get(id)!.properties.firstname, 'Z');
});

t.test('a batch refused as a whole is thrown back for bisection; an unknown property is fatal', async (t) => {
  const d = open();
  const rows = [contact(700), contact(701, { email: 'not-an-email' }), contact(702)];
  const err = await d.write({ object: 'contacts', operation: 'upsert', matchField: 'email', rows }).catch((e) => e);
  t.ok(err instanceof BatchRejectedError, 'HubSpot names no input: the engine must split the batch');
  t.match(err.message, /INVALID_EMAIL|not valid/);
  const fatal = await d.write({ object: 'contacts', operation: 'upsert', matchField: 'email', rows: [contact(703, { nope: 1 })] }).catch((e) => e);
  t.match(fatal, { code: 'property_not_found', classification: 'fatal' });
  const missing = await d.write({ object: 'widgets', operation: 'upsert', matchField: 'email', rows: [contact(704)] }).catch((e) => e);
  t.match(missing, { code: 'object_not_found', classification: 'fatal' });
});

t.test('create: a duplicate is rejected on its own row (multi-status by objectWriteTraceId)', async (t) => {
  const d = open();
  await d.write({ object: 'contacts', operation: 'upsert', matchField: 'email', rows: [contact(800)] });
  hs.reverseResults = true;
  t.teardown(() => void (hs.reverseResults = false));
  const res = await d.write({ object: 'contacts', operation: 'insert', matchField: 'email', rows: [contact(801), contact(800), contact(802)] });
  t.match(res.results, [{ status: 'succeeded', externalId: /\d/ }, { status: 'rejected', code: 'hubspot_conflict', message: /already exists/ }, { status: 'succeeded', externalId: /\d/ }]);
  const ids = res.results.map((r) => (r as { externalId?: string }).externalId);
  t.equal(hs.objects.get('contacts')!.records.get(ids[0]!)!.properties.email, 'user801@example.com');
  t.equal(hs.objects.get('contacts')!.records.get(ids[2]!)!.properties.email, 'user802@example.com');
});

t.test('delete archives by record id, finding ids by unique property when unknown; absent records count as deleted', async (t) => {
  const d = open();
  const up = await d.write({ object: 'contacts', operation: 'upsert', matchField: 'email', rows: [contact(600), contact(601)] });
  const id600 = (up.results[0] as { externalId: string }).externalId;
  const res = await d.write({
    object: 'contacts',
    operation: 'delete',
    matchField: 'email',
    rows: [{ ...contact(600), recordId: id600 }, { primaryKey: '601', payload: { email: 'USER601@example.com' } }, { primaryKey: '699', payload: { email: 'gone@example.com' } }],
  });
  t.match(res.results, [{ status: 'succeeded', externalId: id600 }, { status: 'succeeded', externalId: /\d/ }, { status: 'succeeded' }]);
  const contacts = hs.objects.get('contacts')!.records;
  t.notOk([...contacts.values()].some((r) => r.properties.email === 'user600@example.com' || r.properties.email === 'user601@example.com'));
  const read = hs.calls.filter((c) => c.path.endsWith('/batch/read')).at(-1)!;
  t.same(read.body.inputs.map((i: any) => i.id), ['USER601@example.com', 'gone@example.com'], 'only rows without a known id are looked up');
});

t.test("429s: the burst limit is retryable; the daily limit stops at once with the reset time and is not hammered", async (t) => {
  const d = open({ accessToken: TOKEN }, { accountTimeZone: 'Europe/Paris' });
  hs.throttle = { policy: 'TEN_SECONDLY_ROLLING', remaining: 1 };
  const burst = await d.write({ object: 'contacts', operation: 'upsert', matchField: 'email', rows: [contact(1)] }).catch((e) => e);
  t.match(burst, { code: 'rate_limited', classification: 'retryable' });
  t.ok(burst.retryAfterMs > 0 && burst.retryAfterMs <= 10_000, `waits ${burst.retryAfterMs} ms`);
  hs.throttle = { policy: 'DAILY', remaining: 1 };
  const daily = await d.write({ object: 'contacts', operation: 'upsert', matchField: 'email', rows: [contact(1)] }).catch((e) => e);
  t.ok(daily instanceof ConnectorError);
  t.match(daily, { code: 'daily_limit_exceeded', classification: 'fatal', retryLater: true });
  const reset = nextMidnight('Europe/Paris');
  t.match(daily.message, reset.toISOString(), 'the message says when the limit resets');
  t.ok(Math.abs(daily.retryAfterMs - (reset.getTime() - Date.now())) < 60_000);
  const calls = hs.calls.length;
  const again = await d.write({ object: 'contacts', operation: 'upsert', matchField: 'email', rows: [contact(2)] }).catch((e) => e);
  t.equal(again.code, 'daily_limit_exceeded');
  t.equal(hs.calls.length, calls, 'no request is sent until the reset');
  hs.throttle = undefined;
});

t.test('nextMidnight is the next local midnight of the zone', async (t) => {
  const at = Date.parse('2025-03-10T22:30:00Z');
  t.equal(nextMidnight('UTC', at).toISOString(), '2025-03-11T00:00:00.000Z');
  t.equal(nextMidnight('Europe/Paris', at).toISOString(), '2025-03-10T23:00:00.000Z', 'UTC+1 in March');
  t.equal(nextMidnight('America/New_York', at).toISOString(), '2025-03-11T04:00:00.000Z', 'UTC-4 after the DST change');
});

t.test('a refused private-app token is fatal with a hint', async (t) => {
  const err = await open({ accessToken: 'pat-wrong' }).write({ object: 'contacts', operation: 'upsert', matchField: 'email', rows: [contact(1)] }).catch((e) => e);
  t.match(err, { code: 'auth_failed', classification: 'fatal', hint: /private app/ });
  const none = await open({}).write({ object: 'contacts', operation: 'upsert', matchField: 'email', rows: [contact(1)] }).catch((e) => e);
  t.match(none, { code: 'missing_secret', classification: 'fatal' });
});

t.test('lookup: owners by e-mail (case-insensitive) and any object through the search API, every match kept', async (t) => {
  const d = open();
  hs.owners = Array.from({ length: 230 }, (_, i) => ({ id: String(70000 + i), email: `Owner${i}@Example.com`, firstName: 'O', lastName: String(i), userId: 9000 + i }));
  const owners = await d.lookup!({ object: 'owners', matchField: 'email', resultField: 'id', values: ['owner3@example.com', ' OWNER229@example.com', 'nobody@example.com'], caseInsensitive: true });
  t.same(owners.get('owner3@example.com'), [{ id: '70003', value: '70003' }]);
  t.same(owners.get(' OWNER229@example.com'), [{ id: '70229', value: '70229' }], 'found on the third page of owners, keyed by the value as asked');
  t.notOk(owners.get('nobody@example.com')?.length);
  const ownerPages = hs.calls.filter((c) => c.path === '/crm/v3/owners').length;
  await d.lookup!({ object: 'owners', matchField: 'email', resultField: 'id', values: ['owner4@example.com'], caseInsensitive: true });
  t.equal(hs.calls.filter((c) => c.path === '/crm/v3/owners').length, ownerPages, 'owners are listed once per connector (run)');

  const companies = hs.objects.get('companies')!.records;
  companies.set('5001', { id: '5001', properties: { hs_object_id: '5001', name: 'Acme', domain: 'acme.com' } });
  companies.set('5002', { id: '5002', properties: { hs_object_id: '5002', name: 'Acme EU', domain: 'acme.com' } });
  companies.set('5003', { id: '5003', properties: { hs_object_id: '5003', name: 'Initech', domain: 'initech.com' } });
  const found = await d.lookup!({ object: 'companies', matchField: 'domain', resultField: 'hs_object_id', values: ['acme.com', 'initech.com', 'none.com'] });
  t.same(found.get('acme.com')?.map((m) => m.id).sort(), ['5001', '5002'], 'both matches, so the engine can call the value ambiguous');
  t.same(found.get('initech.com'), [{ id: '5003', value: '5003' }]);
  t.notOk(found.get('none.com')?.length);
});

t.test('hs_object_id as match key: update by id works, upsert is a configuration error', async (t) => {
  const d = open();
  const up = await d.write({ object: 'contacts', operation: 'upsert', matchField: 'email', rows: [contact(950)] });
  const id = (up.results[0] as { externalId: string }).externalId;
  const res = await d.write({ object: 'contacts', operation: 'update', matchField: 'hs_object_id', rows: [{ primaryKey: '950', payload: { hs_object_id: id, firstname: 'By id' } }] });
  t.match(res.results, [{ status: 'succeeded', externalId: id }]);
  t.equal(hs.objects.get('contacts')!.records.get(id)!.properties.firstname, 'By id');
  await t.rejects(d.write({ object: 'contacts', operation: 'upsert', matchField: 'hs_object_id', rows: [{ primaryKey: '1', payload: { hs_object_id: id } }] }), { code: 'invalid_match_key', classification: 'fatal' });
});

t.test('more rows than one request: a throttled later request keeps the outcomes of the earlier ones', async (t) => {
  const d = open();
  let n = 0;
  const before = hs.calls.length;
  // The second create request of this write is throttled.
  hs.reject = () => undefined;
  const realThrottle = hs.throttle;
  const rows = Array.from({ length: 150 }, (_, i) => contact(3000 + i));
  const origPush = hs.calls.push.bind(hs.calls);
  hs.calls.push = (...c) => {
    if (c[0].path.endsWith('/batch/create') && ++n === 2) hs.throttle = { policy: 'TEN_SECONDLY_ROLLING', remaining: 1 };
    return origPush(...c);
  };
  t.teardown(() => {
    hs.calls.push = origPush;
    hs.throttle = realThrottle;
    hs.reject = undefined;
  });
  const res = await d.write({ object: 'contacts', operation: 'insert', matchField: 'email', rows });
  t.equal(hs.calls.length - before, 2);
  t.ok(res.results.slice(0, 100).every((r) => r.status === 'succeeded'), 'the first 100 are written');
  t.match(res.results[120], { status: 'rejected', retryable: true, code: 'rate_limited' }, 'the other 50 are to be retried');
  t.ok(res.results.slice(100).every((r) => r.status === 'rejected' && r.retryable));
  t.ok(res.retryAfterMs !== undefined);
});
