import t from 'tap';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { controlDb, httpConnection, ok, pgConnection } from '../helpers/http-fixtures.ts';

// A connection's secrets are write-only: never in a response, a log line, the audit log, nor in
// clear in the database.

const SECRET = 'zq-Secret-Value-7f3a9c1e-do-not-leak';
const SECRET2 = 'yx-Other-Secret-55e0b2-never-shown';
const SECRET3 = 'wv-Third-Secret-a9d1-put-value';

t.test('secrets', async (t) => {
  const h = await startTestBackhaul(t);
  const sql = controlDb(h);
  t.teardown(() => sql.end());
  const responses: string[] = [];
  const send = async (...args: Parameters<typeof h.request>) => {
    const r = await h.request(...args);
    responses.push(`${r.status} ${JSON.stringify([...r.headers])} ${r.text}`);
    return r;
  };

  const created = await send('POST', '/v1/connections', { body: pgConnection('secretive', { secrets: { password: SECRET } }), headers: { 'idempotency-key': 'secret-create' } });
  t.equal(created.status, 201);
  t.same(created.body.secretNames, ['password']);
  t.notOk('secrets' in created.body, 'no secrets member');
  const id = created.body.id;

  await send('POST', '/v1/connections', { body: pgConnection('secretive', { secrets: { password: SECRET } }), headers: { 'idempotency-key': 'secret-create' } }); // replay
  await send('GET', `/v1/connections/${id}`);
  await send('GET', '/v1/connections/secretive');
  await send('GET', '/v1/connections');
  const patched = await send('PATCH', `/v1/connections/${id}`, { body: { name: 'Renamed', secrets: { password: SECRET2 } } });
  t.equal(patched.status, 200);
  t.same(patched.body.secretNames, ['password']);
  const put = await send('PUT', '/v1/connections/secretive', { body: pgConnection('secretive', { slug: undefined, secrets: { password: SECRET3 } }) });
  t.equal(put.status, 200);
  const http = await send('POST', '/v1/connections', {
    body: httpConnection('secret-http', { secrets: { token: SECRET, headerValue: { env: 'CRM_TOKEN' } } }),
  });
  t.equal(http.status, 201);
  t.same(http.body.secretNames, ['headerValue', 'token'], 'secretNames lists names (sorted)');
  t.notOk(http.text.includes('CRM_TOKEN'), 'an env reference is not echoed either');
  await send('PUT', '/v1/connections/made-with-secret', { body: pgConnection('made-with-secret', { secrets: { password: SECRET } }) });
  // failing writes must not echo the secret back in their error
  const bad = await send('POST', '/v1/connections', { body: pgConnection('bad-secret', { secrets: { password: SECRET, pasword: SECRET2 } }) });
  t.equal(bad.status, 400);
  const bad2 = await send('POST', '/v1/connections', { body: { ...pgConnection('bad2'), secrets: { password: 12345 }, note: SECRET } });
  t.equal(bad2.status, 400);
  const bad3 = await send('PATCH', `/v1/connections/${id}`, { body: { secrets: { password: { env: SECRET } } } });
  t.equal(bad3.status, 400);
  const bad4 = await send('POST', '/v1/connections', { rawBody: `{"secrets": {"password": "${SECRET}"`, headers: { 'content-type': 'application/json' } });
  t.equal(bad4.status, 400);
  // test connection: the password goes to PostgreSQL (trust auth accepts anything) but not back
  const tested = await send('POST', `/v1/connections/${id}/test`);
  t.equal(tested.status, 200);
  await send('GET', '/v1/audit-events?limit=200');

  const rows = await sql`select t::text as dump from connections t where id = ${id}`;
  const audit = await sql`select coalesce(string_agg(t::text, '\n'), '') as dump from audit_events t`;
  const idem = await sql`select coalesce(string_agg(t::text, '\n'), '') as dump from idempotency_keys t`;
  const everywhere: [string, string][] = [
    ['responses', responses.join('\n')],
    ['logs', h.logs.join('\n')],
    ['connections row', rows[0].dump],
    ['audit_events', audit[0].dump],
    ['idempotency_keys', idem[0].dump],
  ];
  t.ok(h.logs.length > 10, 'there are log lines to look at');
  for (const [where, text] of everywhere) {
    for (const s of [SECRET, SECRET2, SECRET3]) {
      t.notOk(text.includes(s), `${where} does not contain ${s.slice(0, 8)}…`);
      t.notOk(text.includes(Buffer.from(s).toString('base64')), `${where} does not contain it in base64`);
    }
  }
  const stored = await sql`select secrets_sealed from connections where id = ${id}`;
  t.match(stored[0].secrets_sealed, /^v1\./, 'sealed with the versioned AES-GCM format');

  // The latest sealed value is what the service opens (and it is the PUT's).
  const row = (await sql`select * from connections where id = ${id}`)[0];
  const opened = h.bh.services.deps.secrets.open(row.secrets_sealed);
  t.same(opened, { password: SECRET3 });
  const httpRow = (await sql`select * from connections where id = ${http.body.id}`)[0];
  t.same(h.bh.services.deps.secrets.open(httpRow.secrets_sealed), { token: SECRET, headerValue: { env: 'CRM_TOKEN' } }, 'env references are kept as references');
  const audits = await sql`select changed_fields from audit_events where resource_id = ${id} order by id`;
  t.same(audits.map((a) => a.changed_fields), [['slug', 'name', 'type', 'config', 'secrets'], ['name', 'secrets'], ['name', 'secrets']], 'the audit log names "secrets", never values');
});

t.test('env secret references resolve at use', async (t) => {
  const h = await startTestBackhaul(t);
  const c = await ok(h.request('POST', '/v1/connections', { body: pgConnection('envref', { secrets: { password: { env: 'BACKHAUL_TEST_UNSET_VARIABLE_XYZ' } } }) }));
  t.same(c.secretNames, ['password']);
  const r = await h.request('POST', `/v1/connections/${c.id}/test`);
  t.equal(r.status, 200);
  t.equal(r.body.ok, false, 'an unset variable is reported by the test, not a 500');
  t.equal(r.body.error.code, 'secret_env_missing');
  t.match(r.body.error.message, /BACKHAUL_TEST_UNSET_VARIABLE_XYZ/);
});
