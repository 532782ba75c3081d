import t from 'tap';
import { BatchRejectedError } from '../../src/errors.ts';
import { HttpDestination, type HttpDestinationConfig, type HttpOperationConfig } from '../../src/connectors/destinations/http.ts';
import { httpType } from '../../src/connectors/http-type.ts';
import { validateConnectorConfig } from '../../src/lib/validate.ts';
import type { WriteRequest } from '../../src/connectors/types.ts';
import { startFakeApi, type FakeApi } from '../fakes/rest-api.ts';
import { expectCode } from '../fakes/databases.ts';

// A 2xx answer whose body says the request failed (`200 {"ok": false, "error": "invalid_auth"}`,
// the Slack Web API convention) must never count as a success, in row mode as in batch mode; and
// a batch answer without results must show the destination's own reason.

let api: FakeApi;
t.before(async () => {
  api = await startFakeApi();
});
t.beforeEach(() => {
  api.requests.length = 0;
  api.canned.length = 0;
  api.contacts.clear();
});
t.teardown(() => api.close());

const fields = [{ name: 'email', identifier: true }, { name: 'first_name' }];
function open(ops: Partial<Record<WriteRequest['operation'], HttpOperationConfig>>, over: Partial<HttpDestinationConfig> = {}) {
  const config: HttpDestinationConfig = { baseUrl: `${api.url}/api`, auth: { type: 'bearer' }, timeoutMs: 5000, rowConcurrency: 1, objects: [{ name: 'contacts', fields, operations: ops }], ...over };
  // The config must be one a user can save.
  validateConnectorConfig(httpType.configSchema, config);
  return new HttpDestination(config, { token: 'tok-body-errors-1' }, { denyPrivateNetworks: false });
}
const write = (d: HttpDestination, operation: WriteRequest['operation'], ...emails: string[]) =>
  d.write({ object: 'contacts', operation, matchField: 'email', rows: emails.map((email, i) => ({ primaryKey: String(i + 1), payload: { email } })) });

const rowInsert = { insert: { method: 'POST' as const, path: '/contacts' } };

t.test('row mode: a 200 with "ok": false and a row-level error rejects that row with the destination\'s message', async (t) => {
  const d = open(rowInsert);
  api.canned.push({ status: 200, body: { ok: false, error: 'email_already_taken' }, pathPrefix: '/api/contacts' });
  const res = await write(d, 'insert', 'a@x.io', 'b@x.io');
  t.same(res.results[0], { status: 'rejected', code: 'rejected', message: 'email_already_taken', retryable: false });
  t.match(res.results[1], { status: 'succeeded', externalId: /^\d+$/ }, 'the next row goes on');
  api.canned.push({ status: 201, body: { success: false, errors: [{ code: 1004, message: 'DNS Validation Error' }] } });
  const cf = await write(d, 'insert', 'c@x.io');
  t.same(cf.results[0], { status: 'rejected', code: 'rejected', message: 'DNS Validation Error', retryable: false }, 'Cloudflare-style {"success": false}');
});

t.test('row mode: an authentication error in a 200 body fails the request as auth_failed (fatal), never succeeded', async (t) => {
  const d = open(rowInsert);
  for (const error of ['invalid_auth', 'not_authed', 'token_revoked', 'account_inactive', 'missing_scope']) {
    api.canned.push({ status: 200, body: { ok: false, error } });
    const e = await expectCode(t, write(d, 'insert', 'a@x.io'), 'auth_failed', error);
    t.equal(e.classification, 'fatal');
    t.match(e.message, error);
  }
  t.equal(api.contacts.size, 0);
});

t.test('row mode: a throttling error in a 200 body is retried like a 429 (Retry-After honoured)', async (t) => {
  const d = open(rowInsert);
  api.canned.push({ status: 200, headers: { 'retry-after': '4' }, body: { ok: false, error: 'ratelimited' } });
  const e = await expectCode(t, write(d, 'insert', 'a@x.io'), 'rate_limited');
  t.equal(e.classification, 'retryable');
  t.equal((e as { retryAfterMs?: number }).retryAfterMs, 4000);
  // Some rows already written: they are kept, the rest come back retryable.
  api.canned.push({ status: 201, body: { id: 'x1' } }, { status: 200, body: { ok: false, error: 'daily quota exceeded' } });
  const res = await write(d, 'insert', 'a@x.io', 'b@x.io', 'c@x.io');
  t.match(res.results, [{ status: 'succeeded', externalId: 'x1' }, { status: 'rejected', code: 'rate_limited', retryable: true }, { status: 'rejected', code: 'not_attempted', retryable: true }]);
});

t.test('row mode: okPointer / errorPointer read the body where the API puts its verdict', async (t) => {
  const d = open({
    insert: { method: 'POST', path: '/contacts', okPointer: '/meta/accepted' },
    update: { method: 'PATCH', path: '/contacts/{{email}}', errorPointer: '/data/problem' },
  });
  api.canned.push({ status: 200, body: { meta: { accepted: false }, message: 'duplicate contact' } }, { status: 200, body: { meta: { accepted: true }, id: 7 } }, { status: 200, body: { id: 8 } });
  const ins = await write(d, 'insert', 'a@x.io', 'b@x.io', 'c@x.io');
  t.same(ins.results[0], { status: 'rejected', code: 'rejected', message: 'duplicate contact', retryable: false });
  t.same(ins.results[1], { status: 'succeeded', externalId: '7' });
  t.same(ins.results[2], { status: 'rejected', code: 'rejected', message: 'The response has no true at "/meta/accepted".', retryable: false }, 'okPointer set: a missing value is a failure');
  api.canned.push({ status: 200, body: { data: { problem: 'phone is not valid' } } }, { status: 200, body: { data: { problem: null }, id: 9 } }, { status: 200, body: { data: { problem: { code: 'token_expired' } } } });
  const upd = await write(d, 'update', 'a@x.io', 'b@x.io', 'c@x.io').catch((e) => e);
  t.equal(upd.code, 'auth_failed', 'a structured error at errorPointer is classified too');
  t.match(upd.message, /token_expired/);
  api.canned.length = 0;
  api.canned.push({ status: 200, body: { data: { problem: 'phone is not valid' } } }, { status: 200, body: { data: { problem: null }, id: 9 } });
  const upd2 = await write(d, 'update', 'a@x.io', 'b@x.io');
  t.same(upd2.results, [{ status: 'rejected', code: 'rejected', message: 'phone is not valid', retryable: false }, { status: 'succeeded', externalId: '9' }]);
});

t.test('row mode: ordinary 2xx bodies are still successes', async (t) => {
  const d = open(rowInsert);
  api.canned.push({ status: 200, body: { ok: true, id: 'k1' } }, { status: 204 }, { status: 200, body: { id: 'k3', status: 'ok', error: null } }, { status: 200, body: [{ ok: false }] });
  const res = await write(d, 'insert', 'a@x.io', 'b@x.io', 'c@x.io', 'd@x.io');
  t.same(res.results, [{ status: 'succeeded', externalId: 'k1' }, { status: 'succeeded' }, { status: 'succeeded', externalId: 'k3' }, { status: 'succeeded' }]);
});

t.test('batch mode: a 2xx body reporting a failure is not a success', async (t) => {
  const d = open({ upsert: { method: 'POST', path: '/contacts/batch', mode: 'batch', batchKey: 'inputs', results: { pointer: '/results', statusField: 'status', errorField: 'error' } } });
  api.canned.push({ status: 200, body: { ok: false, error: 'invalid_auth' } });
  await expectCode(t, write(d, 'upsert', 'a@x.io', 'b@x.io'), 'auth_failed');
  api.canned.push({ status: 200, body: { ok: false, error: 'payload contains an unknown property' } });
  const e = await expectCode(t, write(d, 'upsert', 'a@x.io', 'b@x.io'), 'rejected');
  t.ok(e instanceof BatchRejectedError, 'the engine splits it to find the rows at fault');
  t.equal(e.message, 'payload contains an unknown property');
});

t.test('batch mode: per-row results inside a failure envelope are read row by row', async (t) => {
  const d = open({ upsert: { method: 'POST', path: '/contacts/batch', mode: 'batch', batchKey: 'inputs', results: { pointer: '/results', okField: 'ok', errorField: 'error' } } });
  api.canned.push({ status: 200, body: { success: false, results: [{ ok: true, id: 1 }, { ok: false, error: 'bad phone' }] } });
  const res = await write(d, 'upsert', 'a@x.io', 'b@x.io');
  t.same(res.results, [{ status: 'succeeded', externalId: '1' }, { status: 'rejected', code: 'rejected', message: 'bad phone', retryable: false }]);
});

t.test('batch mode: an answer without results shows the destination\'s own message', async (t) => {
  const d = open({ upsert: { method: 'POST', path: '/contacts/batch', mode: 'batch', batchKey: 'inputs', results: { pointer: '/results', statusField: 'status', errorField: 'error' } } });
  api.canned.push({ status: 200, body: { error: 'daily quota exceeded' } });
  const q = await expectCode(t, write(d, 'upsert', 'a@x.io'), 'rate_limited');
  t.match(q.message, /daily quota exceeded/);
  t.equal(q.classification, 'retryable');
  api.canned.push({ status: 200, body: { message: 'The account is in read-only mode' } });
  const ro = await expectCode(t, write(d, 'upsert', 'a@x.io'), 'invalid_response');
  t.match(ro.message, /without results at "\/results": The account is in read-only mode/);
  t.match(ro.hint, /likely cause/);
  api.canned.push({ status: 200, body: { data: [] } });
  const none = await expectCode(t, write(d, 'upsert', 'a@x.io'), 'invalid_response');
  t.match(none.hint, /results\.pointer/, 'with no message of its own, the pointer setting is the suspect');
});

t.test('the config schema accepts okPointer/errorPointer and refuses a pointer without a leading slash', async (t) => {
  const base = { baseUrl: 'https://api.example.com', objects: [{ name: 'c', fields: [], operations: { insert: { method: 'POST', path: '/c', okPointer: '/ok', errorPointer: '/error' } } }] };
  t.doesNotThrow(() => validateConnectorConfig(httpType.configSchema, base));
  t.throws(() => validateConnectorConfig(httpType.configSchema, { ...base, objects: [{ ...base.objects[0], operations: { insert: { method: 'POST', path: '/c', okPointer: 'ok' } } }] }));
});
