import t from 'tap';
import { BatchRejectedError } from '../../src/errors.ts';
import { HttpDestination, type HttpDestinationConfig } from '../../src/connectors/destinations/http.ts';
import { httpType } from '../../src/connectors/http-type.ts';
import type { WriteRequest, WriteRow } from '../../src/connectors/types.ts';
import { startFakeApi, type FakeApi } from '../fakes/rest-api.ts';
import { closedPort, expectCode } from '../fakes/databases.ts';

let api: FakeApi;
t.before(async () => {
  api = await startFakeApi();
});
t.beforeEach(() => {
  api.requests.length = 0;
  api.canned.length = 0;
  api.contacts.clear();
  api.requireOAuth = false;
  api.tokenTtlSeconds = 3600;
});
t.teardown(() => api.close());

const TOKEN = 'tok-very-secret-123';
const fields = [
  { name: 'email', identifier: true, required: true },
  { name: 'first_name' },
  { name: 'age', type: 'integer' as const },
];
function config(over: Partial<HttpDestinationConfig> = {}): HttpDestinationConfig {
  return {
    baseUrl: `${api.url}/api/`,
    auth: { type: 'bearer' },
    headers: { 'x-team': 'growth' },
    timeoutMs: 2000,
    rowConcurrency: 4,
    objects: [
      {
        name: 'contacts',
        label: 'Contacts',
        fields,
        operations: {
          insert: { method: 'POST', path: '/contacts' },
          update: { method: 'PATCH', path: '/contacts/{{email}}' },
          delete: { method: 'DELETE', path: '/contacts/{{email}}' },
          upsert: { method: 'POST', path: '/contacts/batch', mode: 'batch', batchKey: 'inputs', results: { pointer: '/results', statusField: 'status', errorField: 'error' } },
        },
      },
      {
        name: 'strict',
        fields,
        operations: { insert: { method: 'POST', path: '/contacts/batch-strict', mode: 'batch', results: { pointer: '/data', okField: 'ok', errorField: 'error' } } },
      },
      { name: 'gone', fields, operations: { insert: { method: 'POST', path: '/nope', mode: 'batch' } } },
    ],
    ...over,
  };
}
const open = (over: Partial<HttpDestinationConfig> = {}, secrets: Record<string, string> = { token: TOKEN }, denyPrivateNetworks = false) =>
  new HttpDestination(config(over), secrets, { denyPrivateNetworks });
const rows = (...payloads: Record<string, unknown>[]): WriteRow[] => payloads.map((payload, i) => ({ primaryKey: String(i + 1), payload }));
const write = (d: HttpDestination, object: string, operation: WriteRequest['operation'], ...payloads: Record<string, unknown>[]) =>
  d.write({ object, operation, matchField: 'email', rows: rows(...payloads) });

t.test('discovery comes from the config', async (t) => {
  const d = httpType.openDestination!(config(), {}, { denyPrivateNetworks: false });
  t.same(await d.objects(), [{ name: 'contacts', label: 'Contacts' }, { name: 'strict' }, { name: 'gone' }]);
  t.same(await d.fields('contacts'), [
    { name: 'email', type: 'string', required: true, identifier: true },
    { name: 'first_name', type: 'string', required: false, identifier: false },
    { name: 'age', type: 'integer', required: false, identifier: false },
  ]);
  await expectCode(t, d.fields('nope'), 'object_not_found');
  t.match(d.capabilities(), { operations: ['insert', 'update', 'upsert', 'delete'], modes: ['insert', 'update', 'upsert', 'mirror'], supportsDelete: true, defaultMaxRequestsPerSecond: 50 });
});

t.test('row mode: one request per row, per-row rejections with the API message, redacted exchanges', async (t) => {
  const d = open();
  const res = await write(d, 'contacts', 'insert', { email: 'ada@x.io', first_name: 'Ada' }, { email: 'not-an-email' }, { email: 'bob@x.io', age: 41 });
  t.match(res.results[0], { status: 'succeeded', externalId: /^\d+$/ });
  t.same(res.results[1], { status: 'rejected', code: 'http_422', message: 'email "not-an-email" is invalid', retryable: false });
  t.equal(res.results[2].status, 'succeeded');
  t.equal(api.requests.length, 3);
  for (const r of api.requests) {
    t.equal(r.method, 'POST');
    t.equal(r.path, '/api/contacts');
    t.equal(r.headers.authorization, `Bearer ${TOKEN}`);
    t.equal(r.headers['x-team'], 'growth');
    t.equal(r.headers['content-type'], 'application/json');
  }
  t.same(api.requests.map((r) => r.json).sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b))), [
    { email: 'ada@x.io', first_name: 'Ada' }, { email: 'bob@x.io', age: 41 }, { email: 'not-an-email' },
  ]);
  t.equal(res.exchanges?.length, 3);
  const ex = res.exchanges!.find((e) => e.rowIndexes?.[0] === 1)!;
  t.equal(ex.request.headers.authorization, '[REDACTED]');
  t.equal(ex.response?.status, 422);
  t.match(ex.response?.body, /is invalid/);
  t.notMatch(JSON.stringify(res.exchanges), TOKEN, 'the token appears nowhere in the exchanges');
});

t.test('row mode: path templates are URL-encoded; 404 is not_found, except for deletes', async (t) => {
  const d = open();
  await write(d, 'contacts', 'insert', { email: 'a+b/c@x.io' }, { email: 'z@x.io' });
  api.requests.length = 0;
  const res = await write(d, 'contacts', 'update', { email: 'a+b/c@x.io', first_name: 'A' }, { email: 'ghost@x.io', first_name: 'G' }, { email: '', first_name: 'E' });
  t.match(res.results[0], { status: 'succeeded' });
  t.match(res.results[1], { status: 'rejected', code: 'not_found', message: 'contact ghost@x.io not found' });
  t.match(res.results[2], { status: 'rejected', code: 'invalid_value', message: /no value/ });
  t.same(api.requests.map((r) => r.path).sort(), ['/api/contacts/a%2Bb%2Fc%40x.io', '/api/contacts/ghost%40x.io']);
  t.equal([...api.contacts.values()].find((c) => c.email === 'a+b/c@x.io')?.first_name, 'A');
  const del = await write(d, 'contacts', 'delete', { email: 'z@x.io' }, { email: 'ghost@x.io' });
  t.same(del.results, [{ status: 'succeeded' }, { status: 'succeeded' }]);
  t.equal(api.requests.at(-1)?.body, '', 'DELETE carries no body');
  t.equal(api.contacts.size, 1);
});

t.test('batch mode: 207 Multi-Status per-row outcomes', async (t) => {
  const d = open();
  const res = await write(d, 'contacts', 'upsert', { email: 'a@x.io' }, { email: 'bad' }, { email: 'c@x.io' });
  t.equal(api.requests.length, 1);
  t.same(api.requests[0].json, { inputs: [{ email: 'a@x.io' }, { email: 'bad' }, { email: 'c@x.io' }] });
  t.match(res.results, [
    { status: 'succeeded', externalId: /^\d+$/ },
    { status: 'rejected', code: 'http_422', message: 'email "bad" is invalid', retryable: false },
    { status: 'succeeded' },
  ]);
  t.same(res.exchanges?.[0].rowIndexes, [0, 1, 2]);
});

t.test('batch mode: a whole-batch 400 is a BatchRejectedError; okField results', async (t) => {
  const d = open();
  const err = await expectCode(t, write(d, 'strict', 'insert', { email: 'a@x.io' }, { email: 'bad' }), 'http_400');
  t.ok(err instanceof BatchRejectedError);
  t.equal(err.classification, 'row');
  t.equal(err.message, 'record 1: email "bad" is invalid');
  const ok = await write(d, 'strict', 'insert', { email: 'a@x.io' }, { email: 'b@x.io' });
  t.match(ok.results, [{ status: 'succeeded', externalId: /\d/ }, { status: 'succeeded' }]);
  const e404 = await expectCode(t, write(d, 'gone', 'insert', { email: 'a@x.io' }), 'object_not_found');
  t.equal(e404.classification, 'fatal');
  await expectCode(t, write(d, 'contacts', 'insert', { email: 'a@x.io' }).then(() => d.write({ object: 'strict', operation: 'delete', matchField: 'email', rows: rows({ email: 'a' }) })), 'operation_not_supported');
});

t.test('batch mode: a results array that does not line up is refused', async (t) => {
  const d = open();
  api.canned.push({ status: 207, body: { results: [{ status: 201 }] } });
  await expectCode(t, write(d, 'contacts', 'upsert', { email: 'a@x.io' }, { email: 'b@x.io' }), 'invalid_response');
});

t.test('429 and 5xx are retryable, with Retry-After in seconds or as a date', async (t) => {
  const d = open();
  api.canned.push({ status: 429, headers: { 'retry-after': '7' }, body: { message: 'slow down' } });
  const e = await expectCode(t, write(d, 'contacts', 'upsert', { email: 'a@x.io' }), 'rate_limited');
  t.equal(e.classification, 'retryable');
  t.equal((e as { retryAfterMs?: number }).retryAfterMs, 7000);
  const retryAt = new Date(Date.now() + 30_000).toUTCString(); // whole seconds
  api.canned.push({ status: 429, headers: { 'retry-after': retryAt } });
  const before = Date.now();
  const e2 = await expectCode(t, write(d, 'contacts', 'insert', { email: 'a@x.io' }), 'rate_limited');
  const after = Date.now();
  const ms = (e2 as { retryAfterMs?: number }).retryAfterMs ?? 0;
  // Measured from when the answer was read, which lies between `before` and `after` (however loaded the machine).
  t.ok(ms >= Date.parse(retryAt) - after && ms <= Date.parse(retryAt) - before, `HTTP-date Retry-After (${ms} ms)`);
  api.canned.push({ status: 503, body: { message: 'maintenance' } });
  const e3 = await expectCode(t, write(d, 'contacts', 'upsert', { email: 'a@x.io' }), 'destination_unavailable');
  t.equal(e3.classification, 'retryable');
  t.match(e3.message, /503: maintenance/);
});

t.test('row mode: a 429 after some rows were written keeps those rows', async (t) => {
  const d = open({ rowConcurrency: 1 });
  await write(d, 'contacts', 'insert', { email: 'a@x.io' }, { email: 'b@x.io' }, { email: 'c@x.io' });
  api.canned.push({ status: 429, headers: { 'retry-after': '3' }, pathPrefix: '/api/contacts/b%40x.io' });
  const res = await write(d, 'contacts', 'update', { email: 'a@x.io', age: 1 }, { email: 'b@x.io', age: 2 }, { email: 'c@x.io', age: 3 });
  t.match(res.results[0], { status: 'succeeded', externalId: /^\d+$/ });
  t.match(res.results[1], { status: 'rejected', code: 'rate_limited', retryable: true });
  t.match(res.results[2], { status: 'rejected', code: 'not_attempted', retryable: true });
  t.equal(res.retryAfterMs, 3000);
  // Nothing written yet when the first request is throttled: the whole batch is thrown back.
  api.canned.push({ status: 429 });
  await expectCode(t, write(d, 'contacts', 'update', { email: 'a@x.io', age: 1 }), 'rate_limited');
});

t.test('timeouts, oversized responses and refused connections', async (t) => {
  const d = open({ timeoutMs: 200, maxResponseBytes: 1024 });
  api.canned.push({ status: 200, body: {}, delayMs: 1500 });
  // Gave up at the timeout: an answer awaited to the end would have been a 200.
  const e = await expectCode(t, write(d, 'contacts', 'insert', { email: 'a@x.io' }), 'request_timeout');
  t.equal(e.classification, 'retryable');
  api.canned.push({ status: 200, raw: Buffer.alloc(64 * 1024, 'x') });
  await expectCode(t, write(d, 'contacts', 'upsert', { email: 'a@x.io' }), 'response_too_large');
  const down = open({ baseUrl: `http://127.0.0.1:${await closedPort()}` });
  const e2 = await expectCode(t, write(down, 'contacts', 'upsert', { email: 'a@x.io' }), 'connection_refused');
  t.equal(e2.classification, 'retryable');
});

t.test('401 and 403 are fatal', async (t) => {
  const d = open();
  api.canned.push({ status: 401, body: { message: 'bad token' } });
  const e = await expectCode(t, write(d, 'contacts', 'upsert', { email: 'a@x.io' }), 'auth_failed');
  t.equal(e.classification, 'fatal');
  api.canned.push({ status: 403, body: { message: 'scope missing' } });
  await expectCode(t, write(d, 'contacts', 'insert', { email: 'a@x.io' }), 'permission_denied');
  await expectCode(t, write(open({}, {}), 'contacts', 'insert', { email: 'a@x.io' }), 'missing_secret');
});

t.test('basic and custom-header auth', async (t) => {
  const b = open({ auth: { type: 'basic', username: 'svc' } }, { password: 'pw-secret-1' });
  const r1 = await write(b, 'contacts', 'insert', { email: 'a@x.io' });
  t.equal(api.requests[0].headers.authorization, `Basic ${Buffer.from('svc:pw-secret-1').toString('base64')}`);
  t.equal(r1.exchanges?.[0].request.headers.authorization, '[REDACTED]');
  const h = open({ auth: { type: 'header', headerName: 'X-Api-Token' } }, { headerValue: 'hv-secret-2' });
  const r2 = await write(h, 'contacts', 'insert', { email: 'b@x.io' });
  t.equal(api.requests[1].headers['x-api-token'], 'hv-secret-2');
  t.equal(r2.exchanges?.[0].request.headers['x-api-token'], '[REDACTED]');
});

t.test('OAuth2 client credentials: cached, refreshed before expiry, refreshed once on 401', async (t) => {
  api.requireOAuth = true;
  const oauth = { type: 'oauth2_client_credentials' as const, tokenUrl: `${api.url}/oauth/token`, clientId: api.clientId, scope: 'contacts.write' };
  const d = open({ auth: oauth }, { clientSecret: api.clientSecret });
  await d.test();
  t.equal(api.tokensIssued, 1, 'test() fetches a token');
  const tokenReq = api.requests.find((r) => r.path === '/oauth/token')!;
  t.match(tokenReq.body, /grant_type=client_credentials/);
  t.match(tokenReq.body, /scope=contacts.write/);
  await write(d, 'contacts', 'insert', { email: 'a@x.io' });
  await write(d, 'contacts', 'insert', { email: 'b@x.io' }, { email: 'c@x.io' });
  t.equal(api.tokensIssued, 1, 'the token is cached');
  t.equal(api.contacts.size, 3);

  api.revokeTokens();
  const res = await write(d, 'contacts', 'upsert', { email: 'd@x.io' });
  t.equal(res.results[0].status, 'succeeded', 'a 401 refreshes the token and retries once');
  t.equal(api.tokensIssued, 2);
  t.notMatch(JSON.stringify(res.exchanges), /tok_\d|s3cr3t/, 'tokens and client secret are redacted');

  api.tokenTtlSeconds = 1;
  const short = open({ auth: oauth }, { clientSecret: api.clientSecret });
  await write(short, 'contacts', 'insert', { email: 'e@x.io' });
  const issued = api.tokensIssued;
  await new Promise((r) => setTimeout(r, 1100));
  const before401s = api.requests.length;
  await write(short, 'contacts', 'insert', { email: 'f@x.io' });
  t.equal(api.tokensIssued, issued + 1, 'an expiring token is refreshed proactively');
  t.same(api.requests.slice(before401s).map((r) => r.path), ['/oauth/token', '/api/contacts'], 'without a failed request first');

  const wrong = open({ auth: oauth }, { clientSecret: 'nope' });
  const e = await expectCode(t, wrong.test(), 'auth_failed');
  t.match(e.message, /invalid_client/);
  api.revokeTokens();
  api.canned.push({ status: 401, pathPrefix: '/api' }, { status: 401, pathPrefix: '/api' });
  await expectCode(t, write(d, 'contacts', 'insert', { email: 'g@x.io' }), 'auth_failed', 'a second 401 after refreshing is fatal');
});

t.test('test(): any HTTP answer is reachable; network errors are classified', async (t) => {
  await open().test();
  await open({ baseUrl: `${api.url}/definitely/missing` }).test();
  await expectCode(t, open({ baseUrl: `http://127.0.0.1:${await closedPort()}` }).test(), 'connection_refused');
  await expectCode(t, open({ baseUrl: 'http://nonexistent.invalid/' }).test(), 'dns_not_found');
});

t.test('the address guard applies to destination requests', async (t) => {
  const meta = open({ baseUrl: 'http://169.254.169.254/latest' }, { token: TOKEN }, false);
  const e = await expectCode(t, meta.test(), 'address_not_allowed');
  t.equal(e.classification, 'fatal');
  await expectCode(t, write(meta, 'contacts', 'upsert', { email: 'a@x.io' }), 'address_not_allowed');
  const denied = open({}, { token: TOKEN }, true);
  await expectCode(t, write(denied, 'contacts', 'insert', { email: 'a@x.io' }), 'address_not_allowed');
  const viaName = open({ baseUrl: api.url.replace('127.0.0.1', 'localhost') }, { token: TOKEN }, true);
  await expectCode(t, viaName.test(), 'address_not_allowed', 'checked after DNS resolution too');
  t.equal(api.requests.length, 0, 'no request reached the server');
  const allowed = open({ baseUrl: api.url.replace('127.0.0.1', 'localhost') + '/api' }, { token: TOKEN }, false);
  t.equal((await write(allowed, 'contacts', 'insert', { email: 'a@x.io' })).results[0].status, 'succeeded', 'private allowed by default');
});
