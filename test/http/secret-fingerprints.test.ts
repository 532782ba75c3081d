import t from 'tap';
import { createHash } from 'node:crypto';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { controlDb, httpConnection, ok, pgConnection } from '../helpers/http-fixtures.ts';

// Automation must see when a secret changed without seeing it: each secret has a keyed
// fingerprint and an updatedAt. Writing the values already stored (secrets included) changes
// nothing: no version bump, no audit event.

const A = 'fp-secret-value-A-1f2e3d';
const B = 'fp-secret-value-B-9a8b7c';

t.test('secret fingerprints and no-op writes', async (t) => {
  const h = await startTestBackhaul(t);
  const sql = controlDb(h);
  t.teardown(() => sql.end());
  const audits = async (id: string) => (await sql`select count(*)::int as n from audit_events where resource_id = ${id}`)[0].n as number;

  const body = httpConnection('fp-crm', { secrets: { token: A, headerValue: { env: 'CRM_TOKEN' } } });
  const c = await ok(h.request('POST', '/v1/connections', { body }));
  t.same(Object.keys(c.secretFingerprints), ['headerValue', 'token']);
  const fpA = c.secretFingerprints.token.fingerprint;
  t.match(fpA, /^fp1_[A-Za-z0-9_-]{22}$/);
  t.equal(c.secretFingerprints.token.updatedAt, c.createdAt);
  for (const plain of [createHash('sha256').update(A).digest('hex'), createHash('sha256').update(A).digest('base64url'), createHash('sha1').update(A).digest('hex')]) {
    t.notOk(plain.includes(fpA.slice(4, 14)), 'not a bare hash of the value');
  }
  t.notOk(JSON.stringify(c).includes(A));
  const before = await audits(c.id);

  // Identical values: PATCH with the same secret, PUT of the same body.
  const same = await ok(h.request('PATCH', `/v1/connections/${c.id}`, { body: { secrets: { token: A } } }), 200);
  t.equal(same.version, c.version, 'PATCH with the stored value: no version bump');
  t.same(same.secretFingerprints, c.secretFingerprints);
  const put = await h.request('PUT', '/v1/connections/fp-crm', { body: { ...body, slug: undefined } });
  t.equal(put.status, 200);
  t.equal(put.body.version, c.version, 'PUT of the same body, secrets included: no version bump');
  t.equal(put.body.updatedAt, c.updatedAt);
  t.equal(await audits(c.id), before, 'no audit event for a no-op');

  // A changed value: its fingerprint and updatedAt move; the other secret's stay.
  const changed = await ok(h.request('PATCH', `/v1/connections/${c.id}`, { body: { secrets: { token: B } } }), 200);
  t.equal(changed.version, c.version + 1);
  t.not(changed.secretFingerprints.token.fingerprint, fpA);
  t.ok(Date.parse(changed.secretFingerprints.token.updatedAt) > Date.parse(c.secretFingerprints.token.updatedAt));
  t.same(changed.secretFingerprints.headerValue, c.secretFingerprints.headerValue, 'untouched secret keeps its fingerprint and time');
  t.equal(await audits(c.id), before + 1);
  const env = await ok(h.request('PATCH', `/v1/connections/${c.id}`, { body: { secrets: { headerValue: { env: 'OTHER_VAR' } } } }), 200);
  t.not(env.secretFingerprints.headerValue.fingerprint, c.secretFingerprints.headerValue.fingerprint, 'an env reference is fingerprinted as the reference');

  // Back to A: the same fingerprint as before (deterministic), detectably different from B.
  const back = await ok(h.request('PATCH', `/v1/connections/${c.id}`, { body: { secrets: { token: A } } }), 200);
  t.equal(back.secretFingerprints.token.fingerprint, fpA);

  // The same value elsewhere does not look the same (fingerprints are scoped).
  const other = await ok(h.request('POST', '/v1/connections', { body: pgConnection('fp-pg', { secrets: { password: A } }) }));
  t.not(other.secretFingerprints.password.fingerprint, fpA);

  // Removing a secret removes its fingerprint.
  const removed = await ok(h.request('PATCH', `/v1/connections/${c.id}`, { body: { secrets: { headerValue: null } } }), 200);
  t.same(Object.keys(removed.secretFingerprints), ['token']);

  // GraphQL shows the same.
  const g = await h.request('POST', '/graphql', { body: { query: `{ connection(ref: "fp-crm") { secretNames secretFingerprints { name fingerprint updatedAt } } }` } });
  t.same(g.body.data.connection.secretFingerprints, [{ name: 'token', ...removed.secretFingerprints.token }], JSON.stringify(g.body));

  // Alert channels follow the same rules.
  const ch = await ok(h.request('POST', '/v1/alert-channels', { body: { slug: 'fp-pd', name: 'PD', type: 'pagerduty', config: { eventsUrl: 'http://127.0.0.1:9/v2/enqueue' }, secrets: { routingKey: A } } }));
  t.match(ch.secretFingerprints.routingKey.fingerprint, /^fp1_/);
  const chSame = await ok(h.request('PATCH', `/v1/alert-channels/${ch.id}`, { body: { secrets: { routingKey: A } } }), 200);
  t.equal(chSame.version, ch.version, 'alert channel: same secret, no version bump');
  const chNew = await ok(h.request('PATCH', `/v1/alert-channels/${ch.id}`, { body: { secrets: { routingKey: B } } }), 200);
  t.not(chNew.secretFingerprints.routingKey.fingerprint, ch.secretFingerprints.routingKey.fingerprint);
  const gc = await h.request('POST', '/graphql', { body: { query: `{ alertChannel(ref: "fp-pd") { secretFingerprints { name fingerprint } } }` } });
  t.same(gc.body.data.alertChannel.secretFingerprints, [{ name: 'routingKey', fingerprint: chNew.secretFingerprints.routingKey.fingerprint }], JSON.stringify(gc.body));

  // Rows stored before fingerprints existed get theirs at start-up, unchanged in version.
  await sql`update connections set secret_meta = '{}' where id = ${c.id}`;
  t.same((await ok(h.request('GET', `/v1/connections/${c.id}`), 200)).secretFingerprints, {});
  t.equal(await h.bh.services.connections.backfillSecretMeta(), 1);
  const filled = await ok(h.request('GET', `/v1/connections/${c.id}`), 200);
  t.equal(filled.secretFingerprints.token.fingerprint, fpA);
  t.equal(filled.version, removed.version);
  t.equal(await h.bh.services.connections.backfillSecretMeta(), 0, 'once done, a no-op');
});
