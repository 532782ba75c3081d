import t from 'tap';
import { startTestBackhaul } from '../helpers/backhaul.ts';
import { ok } from '../helpers/http-fixtures.ts';
import { startFakeSalesforce } from '../fakes/salesforce.ts';
import { startFakeGraphqlApi } from '../fakes/graphql-api.ts';

// The Salesforce and GraphQL API connector types through the public API: the catalog entry,
// config validation, connection test and discovery (describe → fields with equality and picklists).

t.test('Salesforce and GraphQL API connectors through the REST API', async (t) => {
  const h = await startTestBackhaul(t);
  const sf = await startFakeSalesforce();
  const gql = await startFakeGraphqlApi();
  t.teardown(() => Promise.all([sf.close(), gql.close()]));

  t.test('the catalog lists both with schema, secrets, capabilities and rate defaults', async (t) => {
    const list = await ok(h.request('GET', '/v1/connectors'), 200);
    const by = Object.fromEntries((list.data as { type: string }[]).map((c) => [c.type, c]));
    t.match(by.salesforce, {
      roles: ['destination'],
      configSchema: { type: 'object', additionalProperties: false, properties: { instanceUrl: {}, oauth: { properties: { tokenUrl: {} } }, apiVersion: { default: 'v62.0' }, bulkThreshold: { default: 10_000 } } },
      capabilities: { maxBatchSize: 200, defaultMaxRequestsPerSecond: 10, bulk: { threshold: 10_000, maxBatchSize: 100_000 } },
      oauth: {
        provider: 'salesforce',
        authorizeUrl: 'https://login.salesforce.com/services/oauth2/authorize',
        tokenUrl: 'https://login.salesforce.com/services/oauth2/token',
        scopes: ['api', 'refresh_token'],
      },
    });
    t.same((by.salesforce as unknown as { secrets: { name: string }[] }).secrets.map((s) => s.name), ['accessToken', 'refreshToken', 'accessTokenExpiresAt', 'clientSecret', 'instanceUrl']);
    t.match(by.graphql, { roles: ['destination'], configSchema: { required: ['url', 'objects'] }, capabilities: { defaultMaxRequestsPerSecond: 10 } });
  });

  t.test('a Salesforce connection: validated config, test, objects, fields', async (t) => {
    const bad = await h.request('POST', '/v1/connections', { body: { slug: 'sf-bad', name: 'SF', type: 'salesforce', config: { apiVersion: '62' }, secrets: {} } });
    t.equal(bad.status, 400);
    await ok(h.request('POST', '/v1/connections', { body: { slug: 'sf', name: 'Salesforce', type: 'salesforce', config: { instanceUrl: sf.url }, secrets: { accessToken: sf.issueToken() } } }), 201);
    const test = await ok(h.request('POST', '/v1/connections/sf/test'), 200);
    t.equal(test.ok, true);
    const objects = await ok(h.request('GET', '/v1/connections/sf/objects'), 200);
    t.same((objects.data as { name: string }[]).map((o) => o.name), ['Contact', 'Account', 'User']);
    const fields = await ok(h.request('GET', '/v1/connections/sf/objects/Contact/fields'), 200);
    const by = Object.fromEntries((fields.data as { name: string }[]).map((f) => [f.name, f]));
    t.same(by.Email, { name: 'Email', type: 'string', required: false, identifier: true, equality: 'case_insensitive' });
    t.same(by.LeadSource, { name: 'LeadSource', type: 'string', required: false, identifier: false, allowedValues: ['Web', 'Phone Inquiry', 'Partner Referral', 'Other'] });
    sf.expireTokens();
    const expired = await ok(h.request('POST', '/v1/connections/sf/test'), 200);
    t.match(expired, { ok: false, error: { code: 'auth_failed' } });
  });

  t.test('a GraphQL connection: test reaches the endpoint; a bad document is reported by the test', async (t) => {
    const objects = [{ name: 'contacts', fields: [{ name: 'email', identifier: true }], operations: { insert: { mutation: 'mutation($input: ContactInput!) { createContact(input: $input) { id } }' } } }];
    await ok(h.request('POST', '/v1/connections', { body: { slug: 'gql', name: 'GraphQL', type: 'graphql', config: { url: `${gql.url}/graphql`, auth: { type: 'bearer' }, objects }, secrets: { token: gql.token } } }), 201);
    t.equal((await ok(h.request('POST', '/v1/connections/gql/test'), 200)).ok, true);
    const badDoc = [{ ...objects[0], operations: { insert: { mutation: 'query { contactCount }' } } }];
    await ok(h.request('POST', '/v1/connections', { body: { slug: 'gql-bad', name: 'GraphQL', type: 'graphql', config: { url: `${gql.url}/graphql`, objects: badDoc } } }), 201);
    t.match(await ok(h.request('POST', '/v1/connections/gql-bad/test'), 200), { ok: false, error: { code: 'invalid_config' } });
  });
});
