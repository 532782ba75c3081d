import t from 'tap';
import { HttpDestination, type HttpDestinationConfig } from '../../src/connectors/destinations/http.ts';
import type { WriteRequest, WriteResult } from '../../src/connectors/types.ts';
import { startFakeApi, type FakeApi } from '../fakes/rest-api.ts';

// A destination that echoes the request (headers and body) in its error answers must not get the
// connection's credentials into anything the destination connector hands back: rejected rows'
// messages, thrown errors, and the exchanges kept for the row debugger (headers and bodies), in
// clear or in any encoding (base64 of Basic `user:pass`, URL-encoded, JSON-escaped).

let api: FakeApi;
t.before(async () => {
  api = await startFakeApi();
});
t.beforeEach(() => {
  api.requests.length = 0;
  api.canned.length = 0;
  api.requireOAuth = false;
});
t.teardown(() => api.close());

// Characters that make every encoding differ from the value.
const SECRET = 'p@ss w/rd+"&=ü-7f3a9c';
const fields = [{ name: 'email', identifier: true }, { name: 'note' }];
const objects: HttpDestinationConfig['objects'] = [
  {
    name: 'contacts',
    fields,
    operations: {
      insert: { method: 'POST', path: '/contacts' },
      upsert: { method: 'POST', path: '/contacts/batch', mode: 'batch', batchKey: 'inputs', results: { pointer: '/results', statusField: 'status', errorField: 'error' } },
    },
  },
];
const open = (auth: HttpDestinationConfig['auth'], secrets: Record<string, string>) =>
  new HttpDestination({ baseUrl: `${api.url}/api`, auth, timeoutMs: 5000, rowConcurrency: 2, objects }, secrets, { denyPrivateNetworks: false });

function forms(secret: string, user?: string): string[] {
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  const f = [secret, JSON.stringify(secret).slice(1, -1), encodeURIComponent(secret), b64(secret)];
  if (user !== undefined) f.push(b64(`${user}:${secret}`));
  return f;
}

/** Every string leaf of a value (so an escaped form is not hidden by a second JSON encoding). */
function strings(v: unknown): string[] {
  if (typeof v === 'string') return [v];
  if (Array.isArray(v)) return v.flatMap(strings);
  if (v && typeof v === 'object') return Object.entries(v).flatMap(([k, x]) => [k, ...strings(x)]);
  return [];
}

/** Everything the connector returned or threw, as its strings joined by newlines. */
async function outcome(p: Promise<WriteResult>): Promise<{ dump: string; res?: WriteResult; err?: any }> {
  try {
    const res = await p;
    return { dump: strings(res).join('\n'), res };
  } catch (e: any) {
    return { dump: strings({ message: e.message, hint: e.hint, stack: e.stack, exchanges: e.exchanges, cause: String(e.cause?.message ?? '') }).join('\n'), err: e };
  }
}

const write = (d: HttpDestination, operation: WriteRequest['operation'], n = 2) =>
  d.write({ object: 'contacts', operation, matchField: 'email', rows: Array.from({ length: n }, (_, i) => ({ primaryKey: String(i), payload: { email: `u${i}@x.io`, note: 'hello' } })) });

const cases: [string, HttpDestinationConfig['auth'], Record<string, string>, string[]][] = [
  ['bearer', { type: 'bearer' }, { token: SECRET }, forms(SECRET)],
  ['basic', { type: 'basic', username: 'svc-user' }, { password: SECRET }, forms(SECRET, 'svc-user')],
  ['header', { type: 'header', headerName: 'X-Echo-Me' }, { headerValue: SECRET }, forms(SECRET)],
];

for (const [name, auth, secrets, leaks] of cases) {
  t.test(`${name} auth: echoed credentials are redacted from row messages, errors and exchanges`, async (t) => {
    const d = open(auth, secrets);
    // Row mode: one row refused with an echo, one whole-request failure (a 400 on a batch).
    api.canned.push({ status: 422, echo: true, pathPrefix: '/api/contacts' });
    const rows = await outcome(write(d, 'insert'));
    t.ok(rows.res, 'row mode answered');
    const rejected = rows.res!.results.find((r) => r.status === 'rejected');
    t.ok(rejected, 'the echoed row is rejected');
    t.match((rejected as { message: string }).message, /refused request with headers/);
    const sent = name === 'basic' ? `Basic ${Buffer.from(`svc-user:${SECRET}`).toString('base64')}` : name === 'bearer' ? `Bearer ${SECRET}` : SECRET;
    t.ok(api.requests.some((r) => Object.values(r.headers).includes(sent)), 'the credential was really sent');

    api.canned.push({ status: 400, echo: true });
    const batch = await outcome(write(d, 'upsert'));
    t.equal(batch.err?.code, 'http_400');
    t.match(batch.err?.message, /refused request with headers/);

    api.canned.push({ status: 500, echo: true });
    const fatal = await outcome(write(d, 'upsert'));
    t.equal(fatal.err?.code, 'destination_unavailable');

    for (const [what, o] of [['row mode', rows], ['batch 400', batch], ['batch 500', fatal]] as const) {
      t.ok(o.dump.includes('[REDACTED]'), `${what}: something was redacted`);
      for (const leak of leaks) t.notOk(o.dump.includes(leak), `${what}: no ${JSON.stringify(leak).slice(0, 30)}`);
    }
  });
}

t.test('OAuth2: the client secret and the live access token are redacted', async (t) => {
  api.requireOAuth = true;
  const d = open({ type: 'oauth2_client_credentials', tokenUrl: `${api.url}/oauth/token`, clientId: api.clientId }, { clientSecret: api.clientSecret });
  await d.test();
  api.canned.push({ status: 422, echo: true, pathPrefix: '/api/contacts' }, { status: 422, echo: true, pathPrefix: '/api/contacts' });
  const o = await outcome(write(d, 'insert'));
  const tokens = api.requests.map((r) => String(r.headers.authorization ?? '')).filter((a) => a.startsWith('Bearer ')).map((a) => a.slice(7));
  t.ok(tokens.length > 0, 'a token was used');
  for (const leak of [...tokens, api.clientSecret]) t.notOk(o.dump.includes(leak), `no ${leak}`);
  t.match(o.dump, /REDACTED/);
});
