import { randomBytes } from 'node:crypto';
import t from 'tap';
import { startTestBackhaul, type TestBackhaul } from '../helpers/backhaul.ts';
import { startReceiver, verifyWebhook } from '../fakes/receiver.ts';

// Webhook endpoints, callbacks and alert channels through GraphQL, against the real server:
// the same services (and so the same rules, scopes, versions and error codes) as REST.

type Gql = (query: string, variables?: Record<string, unknown>, token?: string) => Promise<{ status: number; body: any }>;

function client(h: TestBackhaul): Gql {
  return async (query, variables, token) => {
    const r = await h.request('POST', '/graphql', { body: { query, variables }, ...(token ? { token } : {}) });
    return { status: r.status, body: r.body };
  };
}

/** The data of an operation that must succeed. */
async function data(gql: Gql, query: string, variables?: Record<string, unknown>, token?: string): Promise<any> {
  const r = await gql(query, variables, token);
  if (r.status !== 200 || r.body?.errors) throw new Error(`GraphQL failed (${r.status}): ${JSON.stringify(r.body)}`);
  return r.body.data;
}

const secret = () => `whsec_${randomBytes(32).toString('base64')}`;

const ENDPOINT_FIELDS = 'id slug name url description events syncIds enabled disabledReason previousSecretExpiresAt createdAt updatedAt version';

t.test('webhook endpoints: secret shown once, lists, node, versions, rotation, redelivery, deletes', async (t) => {
  const h = await startTestBackhaul(t);
  const gql = client(h);

  const created = (
    await data(gql, `mutation($input: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $input) { secret webhookEndpoint { ${ENDPOINT_FIELDS} } } }`, {
      input: { slug: 'ops', name: 'Ops', url: 'https://hooks.example.com/backhaul', events: ['run.completed'] },
    })
  ).createWebhookEndpoint;
  const ep = created.webhookEndpoint;
  t.match(ep.id, /^wh_/);
  t.match(created.secret, /^whsec_/, 'the generated secret is in the create payload');
  t.same(ep.events, ['run.completed']);
  t.same(ep.syncIds, []);
  t.equal(ep.enabled, true);
  t.equal(ep.version, 1);

  // Never readable afterwards: the type has no secret field at all, and REST agrees.
  const secretField = await gql(`{ webhookEndpoint(ref: "ops") { id secret } }`);
  t.equal(secretField.status, 400);
  t.equal(secretField.body.errors[0].extensions.code, 'graphql_validation_failed');
  const rest = await h.request('GET', `/v1/webhook-endpoints/${ep.id}`);
  t.equal(rest.status, 200);
  t.notOk('secret' in rest.body);
  t.notOk(rest.text.includes(created.secret));

  // The same validation as REST, with field pointers into `input`.
  const bad = await gql(`mutation($input: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $input) { secret } }`, {
    input: { slug: 'bad', name: 'Bad', url: 'http://169.254.169.254/latest' },
  });
  t.equal(bad.status, 200);
  t.equal(bad.body.errors[0].extensions.code, 'address_not_allowed');
  t.equal(bad.body.errors[0].extensions.status, 422);
  t.same(bad.body.errors[0].extensions.errors.map((e: any) => e.path), ['/url']);
  const unknownSync = await gql(`mutation($input: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $input) { secret } }`, {
    input: { slug: 'bad2', name: 'Bad', url: 'https://hooks.example.com/x', syncIds: ['nope'] },
  });
  t.equal(unknownSync.body.errors[0].extensions.code, 'invalid_reference');
  t.same(unknownSync.body.errors[0].extensions.errors.map((e: any) => e.path), ['/syncIds/0']);
  const dup = await gql(`mutation($input: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $input) { secret } }`, {
    input: { slug: 'ops', name: 'Again', url: 'https://hooks.example.com/x' },
  });
  t.equal(dup.body.errors[0].extensions.status, 409);

  // A given secret is kept (and returned, once).
  const given = secret();
  const second = (
    await data(gql, `mutation($input: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $input) { secret webhookEndpoint { id } } }`, {
      input: { slug: 'audit', name: 'Audit', url: 'https://hooks.example.com/audit', secret: given },
    })
  ).createWebhookEndpoint;
  t.equal(second.secret, given);

  // Lists page with the REST cursors; node(id) resolves the wh_ prefix.
  const page1 = (await data(gql, `{ webhookEndpoints(first: 1) { edges { cursor node { id slug } } nodes { id } pageInfo { hasNextPage endCursor } } }`)).webhookEndpoints;
  t.same(page1.nodes.map((n: any) => n.id), [ep.id]);
  t.equal(page1.pageInfo.hasNextPage, true);
  const restPage = await h.request('GET', '/v1/webhook-endpoints?limit=1');
  t.equal(page1.pageInfo.endCursor, restPage.body.nextCursor, 'the same cursor as REST');
  t.equal(page1.edges[0].cursor, restPage.body.nextCursor);
  const page2 = (await data(gql, `query($after: String) { webhookEndpoints(first: 1, after: $after) { nodes { id } pageInfo { hasNextPage } } }`, { after: page1.pageInfo.endCursor }))
    .webhookEndpoints;
  t.same(page2.nodes.map((n: any) => n.id), [second.webhookEndpoint.id]);
  t.equal(page2.pageInfo.hasNextPage, false);

  const node = (await data(gql, `query($id: ID!) { node(id: $id) { __typename id ... on WebhookEndpoint { slug url version deliveries { nodes { id } } } } }`, { id: ep.id })).node;
  t.same(node, { __typename: 'WebhookEndpoint', id: ep.id, slug: 'ops', url: 'https://hooks.example.com/backhaul', version: 1, deliveries: { nodes: [] } });
  t.equal((await data(gql, `{ webhookEndpoint(ref: "missing") { id } }`)).webhookEndpoint, null);
  t.equal((await data(gql, `{ node(id: "wh_0000000000000000000000000a") { id } }`)).node, null);

  // Update with expectedVersion (REST's If-Match).
  const upd = (
    await data(gql, `mutation($input: UpdateWebhookEndpointInput!) { updateWebhookEndpoint(ref: "ops", input: $input, expectedVersion: 1) { ${ENDPOINT_FIELDS} } }`, {
      input: { name: 'Operations', description: 'on-call', events: [] },
    })
  ).updateWebhookEndpoint;
  t.equal(upd.version, 2);
  t.equal(upd.name, 'Operations');
  t.equal(upd.description, 'on-call');
  t.same(upd.events, []);
  const stale = await gql(`mutation { updateWebhookEndpoint(ref: "ops", input: { name: "Stale" }, expectedVersion: 1) { version } }`);
  t.equal(stale.status, 200);
  t.equal(stale.body.errors[0].extensions.code, 'version_mismatch');
  t.equal(stale.body.errors[0].extensions.status, 412);
  t.equal(stale.body.data, null);
  const cleared = (await data(gql, `mutation { updateWebhookEndpoint(ref: "ops", input: { description: null }) { description version } }`)).updateWebhookEndpoint;
  t.same(cleared, { description: null, version: 3 });

  // Rotation: the new secret once, the previous one signs during the grace period.
  const rot = (
    await data(gql, `mutation { rotateWebhookSecret(ref: "ops", input: { gracePeriodSeconds: 3600 }) { secret webhookEndpoint { id version previousSecretExpiresAt } } }`)
  ).rotateWebhookSecret;
  t.match(rot.secret, /^whsec_/);
  t.not(rot.secret, created.secret);
  t.equal(rot.webhookEndpoint.version, 4);
  t.ok(Date.parse(rot.webhookEndpoint.previousSecretExpiresAt) > Date.now() + 3500_000);
  const rotGiven = secret();
  const rot2 = (await data(gql, `mutation($s: String) { rotateWebhookSecret(ref: "audit", input: { secret: $s, gracePeriodSeconds: 0 }) { secret webhookEndpoint { previousSecretExpiresAt } } }`, { s: rotGiven }))
    .rotateWebhookSecret;
  t.equal(rot2.secret, rotGiven);
  t.equal(rot2.webhookEndpoint.previousSecretExpiresAt, null);
  const rotNoInput = (await data(gql, `mutation { rotateWebhookSecret(ref: "audit") { secret } }`)).rotateWebhookSecret;
  t.match(rotNoInput.secret, /^whsec_/);
  const badSecret = await gql(`mutation { rotateWebhookSecret(ref: "ops", input: { secret: "nope" }) { secret } }`);
  t.equal(badSecret.body.errors[0].extensions.code, 'validation_failed', JSON.stringify(badSecret.body));
  t.equal(badSecret.body.errors[0].extensions.status, 400);
  t.equal(badSecret.body.errors[0].extensions.errors[0].path, '/secret');

  // Replace: whole; creates by slug (returning the secret once); a changed secret rotates.
  const replacedNew = (
    await data(gql, `mutation { replaceWebhookEndpoint(ref: "billing", input: { name: "Billing", url: "https://hooks.example.com/billing" }) { created secret webhookEndpoint { id slug version } } }`)
  ).replaceWebhookEndpoint;
  t.equal(replacedNew.created, true);
  t.match(replacedNew.secret, /^whsec_/);
  t.equal(replacedNew.webhookEndpoint.slug, 'billing');
  const replaced = (
    await data(gql, `mutation { replaceWebhookEndpoint(ref: "ops", input: { name: "Ops", url: "https://hooks.example.com/v2" }, expectedVersion: 4) { created secret webhookEndpoint { name url description events enabled version } } }`)
  ).replaceWebhookEndpoint;
  t.same(replaced, { created: false, secret: null, webhookEndpoint: { name: 'Ops', url: 'https://hooks.example.com/v2', description: null, events: [], enabled: true, version: 5 } });

  // Redelivery of a delivery that does not exist: REST's 404 code.
  const redeliver = await gql(`mutation { redeliverWebhook(endpointRef: "ops", id: "whd_0000000000000000000000000a") { id } }`);
  t.equal(redeliver.body.errors[0].extensions.code, 'not_found');

  // Callback secret: status readable, value only in the rotation payload (admin scope).
  t.same((await data(gql, `{ callbackSecret { configured rotatedAt } }`)).callbackSecret, { configured: false, rotatedAt: null });
  const cb = (await data(gql, `mutation { rotateCallbackSecret { secret callbackSecret { configured rotatedAt previousSecretExpiresAt } } }`)).rotateCallbackSecret;
  t.match(cb.secret, /^whsec_/);
  t.equal(cb.callbackSecret.configured, true);
  t.ok(cb.callbackSecret.rotatedAt);
  t.equal((await data(gql, `{ callbackSecret { configured } }`)).callbackSecret.configured, true);

  // Delete with expectedVersion.
  const staleDelete = await gql(`mutation { deleteWebhookEndpoint(ref: "ops", expectedVersion: 1) { deletedId } }`);
  t.equal(staleDelete.body.errors[0].extensions.code, 'version_mismatch');
  t.same((await data(gql, `mutation { deleteWebhookEndpoint(ref: "ops", expectedVersion: 5) { deletedId } }`)).deleteWebhookEndpoint, { deletedId: ep.id });
  t.equal((await data(gql, `query($id: ID!) { node(id: $id) { id } }`, { id: ep.id })).node, null);
  t.equal((await h.request('GET', '/v1/webhook-endpoints/ops')).status, 404);
});

t.test('alert channels: secrets never readable, test against a local receiver, versions, alerts', async (t) => {
  const h = await startTestBackhaul(t);
  const gql = client(h);
  const rx = await startReceiver();
  t.teardown(() => rx.close());

  const signing = secret();
  const ch = (
    await data(gql, `mutation($input: CreateAlertChannelInput!) { createAlertChannel(input: $input) { id slug name type config { url eventsUrl severity } secretNames version } }`, {
      input: { slug: 'hooks', name: 'Hooks', type: 'webhook', config: { url: `${rx.url}/alerts` }, secrets: { signingSecret: signing } },
    })
  ).createAlertChannel;
  t.match(ch.id, /^ach_/);
  t.same(ch.config, { url: `${rx.url}/alerts`, eventsUrl: null, severity: null });
  t.same(ch.secretNames, ['signingSecret'], 'secret names only');
  t.equal(ch.version, 1);
  const secretsField = await gql(`{ alertChannel(ref: "hooks") { secrets } }`);
  t.equal(secretsField.status, 400);
  t.equal(secretsField.body.errors[0].extensions.code, 'graphql_validation_failed');

  const slack = (
    await data(gql, `mutation($input: CreateAlertChannelInput!) { createAlertChannel(input: $input) { id secretNames config { url } } }`, {
      input: { slug: 'team-slack', name: 'Slack', type: 'slack', secrets: { webhookUrl: `${rx.url}/services/T000/B000/XXXX` } },
    })
  ).createAlertChannel;
  t.same(slack.secretNames, ['webhookUrl']);
  const pd = (await data(gql, `mutation { createAlertChannel(input: { slug: "pd", name: "PD", type: pagerduty, secrets: { routingKey: "R0UT1NG" } }) { config { eventsUrl severity } } }`))
    .createAlertChannel;
  t.same(pd.config, { eventsUrl: 'https://events.pagerduty.com/v2/enqueue', severity: 'error' }, 'the service fills the defaults');

  // The same per-type checks as REST, with pointers into `input`.
  const bad = await gql(`mutation { createAlertChannel(input: { slug: "bad", name: "Bad", type: slack, secrets: { routingKey: "x" } }) { id } }`);
  t.equal(bad.body.errors[0].extensions.code, 'invalid_channel');
  t.same(bad.body.errors[0].extensions.errors.map((e: any) => e.path).sort(), ['/secrets/routingKey', '/secrets/webhookUrl']);

  // Test messages reach the receiver; the webhook channel's is signed with its secret.
  const tested = (await data(gql, `mutation { testAlertChannel(ref: "hooks") { ok statusCode latencyMs error { code message } } }`)).testAlertChannel;
  t.equal(tested.ok, true, JSON.stringify(tested));
  t.equal(tested.statusCode, 200);
  t.equal(tested.error, null);
  t.equal(rx.received.length, 1);
  t.equal(rx.received[0].path, '/alerts');
  t.ok(verifyWebhook(signing, rx.received[0].headers, rx.received[0].raw), 'signed with the channel secret');
  t.match(rx.received[0].body, { type: 'alert.test' });
  const slackTest = (await data(gql, `mutation($ref: String!) { testAlertChannel(ref: $ref) { ok } }`, { ref: slack.id })).testAlertChannel;
  t.equal(slackTest.ok, true);
  t.equal(rx.received[1].path, '/services/T000/B000/XXXX');
  rx.respond = () => ({ status: 500, body: 'down' });
  const failing = (await data(gql, `mutation { testAlertChannel(ref: "hooks") { ok statusCode error { code message } } }`)).testAlertChannel;
  t.equal(failing.ok, false, 'a failure is in the result, not an error');
  t.ok(failing.error.code);

  // Lists, node(id), and lookups by ref.
  const list = (await data(gql, `{ alertChannels(first: 2) { edges { cursor } nodes { id slug } pageInfo { hasNextPage endCursor } } }`)).alertChannels;
  t.same(list.nodes.map((n: any) => n.slug), ['hooks', 'team-slack']);
  t.equal(list.pageInfo.hasNextPage, true);
  t.equal(list.pageInfo.endCursor, (await h.request('GET', '/v1/alert-channels?limit=2')).body.nextCursor);
  const node = (await data(gql, `query($id: ID!) { node(id: $id) { __typename ... on AlertChannel { id slug secretNames } } }`, { id: ch.id })).node;
  t.same(node, { __typename: 'AlertChannel', id: ch.id, slug: 'hooks', secretNames: ['signingSecret'] });
  t.equal((await data(gql, `{ alertChannel(ref: "team-slack") { id } }`)).alertChannel.id, slack.id);
  t.equal((await data(gql, `{ alertChannel(ref: "nope") { id } }`)).alertChannel, null);

  // Update merges config and secrets field by field; stale versions fail.
  const upd = (
    await data(gql, `mutation($url: String) { updateAlertChannel(ref: "hooks", input: { name: "Hooks 2", config: { url: $url } }, expectedVersion: 1) { name config { url } secretNames version } }`, {
      url: `${rx.url}/v2`,
    })
  ).updateAlertChannel;
  t.same(upd, { name: 'Hooks 2', config: { url: `${rx.url}/v2` }, secretNames: ['signingSecret'], version: 2 });
  const stale = await gql(`mutation { updateAlertChannel(ref: "hooks", input: { name: "Stale" }, expectedVersion: 1) { version } }`);
  t.equal(stale.body.errors[0].extensions.code, 'version_mismatch');

  // Replace (creates by slug, or replaces; absent secrets are kept for the same type).
  const rep = (await data(gql, `mutation($url: String) { replaceAlertChannel(ref: "hooks", input: { name: "Hooks", type: webhook, config: { url: $url } }) { created alertChannel { name secretNames version } } }`, { url: rx.url }))
    .replaceAlertChannel;
  t.same(rep, { created: false, alertChannel: { name: 'Hooks', secretNames: ['signingSecret'], version: 3 } });
  const repNew = (await data(gql, `mutation { replaceAlertChannel(ref: "pd2", input: { name: "PD 2", type: pagerduty, secrets: { routingKey: "k" } }) { created alertChannel { slug } } }`))
    .replaceAlertChannel;
  t.same(repNew, { created: true, alertChannel: { slug: 'pd2' } });

  // Alerts: none raised yet; the filters are REST's.
  const alerts = (await data(gql, `{ alerts(status: open) { nodes { id kind status sync { id } } pageInfo { hasNextPage endCursor } } }`)).alerts;
  t.same(alerts, { nodes: [], pageInfo: { hasNextPage: false, endCursor: null } });
  t.equal((await data(gql, `{ node(id: "alr_0000000000000000000000000a") { id } }`)).node, null);

  // Delete.
  const staleDelete = await gql(`mutation { deleteAlertChannel(ref: "pd2", expectedVersion: 7) { deletedId } }`);
  t.equal(staleDelete.body.errors[0].extensions.code, 'version_mismatch');
  const del = (await data(gql, `mutation { deleteAlertChannel(ref: "pd2") { deletedId } }`)).deleteAlertChannel;
  t.match(del.deletedId, /^ach_/);
  t.equal((await data(gql, `{ alertChannel(ref: "pd2") { id } }`)).alertChannel, null);
});

t.test('workspace isolation and scopes', async (t) => {
  const h = await startTestBackhaul(t);
  const gql = client(h);
  const ep = (await data(gql, `mutation { createWebhookEndpoint(input: { slug: "ops", name: "Ops", url: "https://hooks.example.com/x" }) { webhookEndpoint { id } } }`)).createWebhookEndpoint
    .webhookEndpoint;
  const ch = (await data(gql, `mutation { createAlertChannel(input: { slug: "pd", name: "PD", type: pagerduty, secrets: { routingKey: "k" } }) { id } }`)).createAlertChannel;

  // Another workspace sees nothing: null by id or slug, empty lists, not-found on writes.
  const other = (await data(gql, `mutation { createWorkspace(input: { slug: "acme", name: "Acme" }) { token } }`)).createWorkspace.token;
  const nodes = (await data(gql, `query($ids: [ID!]!) { nodes(ids: $ids) { id } }`, { ids: [ep.id, ch.id] }, other)).nodes;
  t.same(nodes, [null, null]);
  t.equal((await data(gql, `query($id: ID!) { node(id: $id) { id } }`, { id: ep.id }, other)).node, null);
  t.equal((await data(gql, `{ webhookEndpoint(ref: "ops") { id } }`, undefined, other)).webhookEndpoint, null);
  t.equal((await data(gql, `{ alertChannel(ref: "pd") { id } }`, undefined, other)).alertChannel, null);
  t.same((await data(gql, `{ webhookEndpoints { nodes { id } } alertChannels { nodes { id } } }`, undefined, other)), { webhookEndpoints: { nodes: [] }, alertChannels: { nodes: [] } });
  const foreignRotate = await gql(`mutation($ref: String!) { rotateWebhookSecret(ref: $ref) { secret } }`, { ref: ep.id }, other);
  t.equal(foreignRotate.body.errors[0].extensions.code, 'not_found');
  const foreignTest = await gql(`mutation($ref: String!) { testAlertChannel(ref: $ref) { ok } }`, { ref: ch.id }, other);
  t.equal(foreignTest.body.errors[0].extensions.code, 'not_found');

  // A read-only key reads but cannot write: forbidden, as in REST.
  const ro = await h.request('POST', '/v1/api-keys', { body: { name: 'ro', scopes: ['read'] } });
  t.equal(ro.status, 201);
  const read = (await data(gql, `{ webhookEndpoints { nodes { id } } alertChannels { nodes { id } } alerts { nodes { id } } callbackSecret { configured } }`, undefined, ro.body.token));
  t.same(read.webhookEndpoints.nodes, [{ id: ep.id }]);
  t.same(read.alertChannels.nodes, [{ id: ch.id }]);
  const writes: [string, string][] = [
    ['createWebhookEndpoint', `mutation { createWebhookEndpoint(input: { slug: "x", name: "X", url: "https://hooks.example.com/y" }) { secret } }`],
    ['updateWebhookEndpoint', `mutation { updateWebhookEndpoint(ref: "ops", input: { name: "Y" }) { id } }`],
    ['replaceWebhookEndpoint', `mutation { replaceWebhookEndpoint(ref: "ops", input: { name: "Y", url: "https://hooks.example.com/y" }) { created } }`],
    ['deleteWebhookEndpoint', `mutation { deleteWebhookEndpoint(ref: "ops") { deletedId } }`],
    ['rotateWebhookSecret', `mutation { rotateWebhookSecret(ref: "ops") { secret } }`],
    ['redeliverWebhook', `mutation { redeliverWebhook(endpointRef: "ops", id: "whd_0000000000000000000000000a") { id } }`],
    ['rotateCallbackSecret', `mutation { rotateCallbackSecret { secret } }`],
    ['createAlertChannel', `mutation { createAlertChannel(input: { slug: "x", name: "X", type: pagerduty, secrets: { routingKey: "k" } }) { id } }`],
    ['updateAlertChannel', `mutation { updateAlertChannel(ref: "pd", input: { name: "Y" }) { id } }`],
    ['replaceAlertChannel', `mutation { replaceAlertChannel(ref: "pd", input: { name: "Y", type: pagerduty }) { created } }`],
    ['deleteAlertChannel', `mutation { deleteAlertChannel(ref: "pd") { deletedId } }`],
    ['testAlertChannel', `mutation { testAlertChannel(ref: "pd") { ok } }`],
  ];
  for (const [name, query] of writes) {
    const r = await gql(query, undefined, ro.body.token);
    t.equal(r.body.errors?.[0]?.extensions?.code, 'forbidden', name);
    t.equal(r.body.data, null, name);
  }
  // Nothing changed.
  const after = (await data(gql, `{ webhookEndpoint(ref: "ops") { name version } alertChannel(ref: "pd") { name version } callbackSecret { configured } }`));
  t.same(after, { webhookEndpoint: { name: 'Ops', version: 1 }, alertChannel: { name: 'PD', version: 1 }, callbackSecret: { configured: false } });
});
