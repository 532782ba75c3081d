import { createClient, type Client } from 'graphql-ws';
import postgres from 'postgres';
import t from 'tap';
import { httpConnectionInput, MODEL_SQL, pgConnectionInput, startGraphql, type GraphqlHarness } from '../helpers/graphql.ts';

// Subscriptions seen through a real graphql-transport-ws client (the `graphql-ws` package, as
// Apollo Client and urql use it): a refused key closes with 4403 Forbidden; a socket lives no
// longer than its key (revoked by the API of another instance, deleted or downscoped by hand);
// events agree with their run; a terminal run has phase null, in events, REST and GraphQL.

const SUBSCRIPTION = 'subscription($s: ID!) { runUpdated(syncId: $s) { runId status phase run { id status phase } } }';

interface Watch {
  client: Client;
  events: any[];
  errors: unknown[];
  closes: number[];
  /** Resolves with the close code of the first close. */
  closed: Promise<number>;
  /** Resolves when the server acknowledged connection_init. */
  connected: Promise<void>;
}

function watch(t: { teardown(fn: () => unknown): void }, url: string, token: string, syncId: string): Watch {
  let onClosed!: (code: number) => void;
  let onConnected!: () => void;
  const w: Watch = {
    events: [],
    errors: [],
    closes: [],
    closed: new Promise((r) => (onClosed = r)),
    connected: new Promise((r) => (onConnected = r)),
    client: createClient({
      url: `${url.replace(/^http/, 'ws')}/graphql`,
      webSocketImpl: WebSocket,
      connectionParams: { authorization: `Bearer ${token}` },
      retryAttempts: 0,
      lazy: false,
      on: {
        connected: () => onConnected(),
        closed: (ev) => {
          const code = (ev as CloseEvent).code;
          w.closes.push(code);
          onClosed(code);
        },
      },
    }),
  };
  w.client.subscribe({ query: SUBSCRIPTION, variables: { s: syncId } }, { next: (v) => w.events.push(v), error: (e) => w.errors.push(e), complete: () => {} });
  t.teardown(() => w.client.dispose());
  return w;
}

/** Resolves with the value, or fails after a generous timeout (waiting for an event, not a time). */
function within<T>(p: Promise<T>, what: string, ms = 15_000): Promise<T> {
  return Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), ms))]);
}

async function setup(g: GraphqlHarness) {
  const actor = (await g.services.apiKeys.authenticate(g.h.token))!;
  const s = g.services;
  const src = await s.connections.create(actor, pgConnectionInput('src') as never);
  const dst = await s.connections.create(actor, httpConnectionInput('dst') as never);
  const model = await s.models.create(actor, { slug: 'm', name: 'M', connectionId: src.id, sql: MODEL_SQL, primaryKey: 'id' }, { validate: false });
  const sync = await s.syncs.create(actor, {
    slug: 'watched',
    name: 'watched',
    modelId: model.id,
    destinationId: dst.id,
    object: 'contacts',
    mode: 'upsert',
    matchKey: { sourceColumn: 'email', destinationField: 'email' },
  });
  return { actor, sync };
}

t.test('a refused key closes with 4403 Forbidden (graphql-transport-ws), seen by the graphql-ws client', async (t) => {
  const g = await startGraphql(t);
  for (const token of ['bh_not_a_real_key_at_all_000000000', '']) {
    const w = watch(t, g.url, token, 'whatever');
    t.equal(await within(w.closed, 'close'), 4403, `closed with 4403 (${token ? 'unknown key' : 'no key'})`);
    t.same(w.events, []);
  }
});

t.test('sockets of a revoked, deleted or downscoped key are closed; others stay', async (t) => {
  const g = await startGraphql(t);
  const { sync } = await setup(g);
  const sql = postgres(g.h.databaseUrl, { max: 1, onnotice: () => {} });
  t.teardown(() => sql.end({ timeout: 1 }));
  // Keys are made and changed through the other instance (g.h), as another process would.
  const mk = async (name: string, scopes: string[]) => {
    const r = await g.h.request('POST', '/v1/api-keys', { body: { name, scopes } });
    if (r.status !== 201) throw new Error(r.text);
    return r.body as { id: string; token: string };
  };
  const [revoked, deleted, downscoped, upheld] = await Promise.all([mk('revoked', ['read']), mk('deleted', ['read']), mk('downscoped', ['write']), mk('upheld', ['read'])]);
  const w = {
    revoked: watch(t, g.url, revoked.token, sync.id),
    deleted: watch(t, g.url, deleted.token, sync.id),
    downscoped: watch(t, g.url, downscoped.token, sync.id),
    upheld: watch(t, g.url, upheld.token, sync.id),
  };
  await within(Promise.all(Object.values(w).map((x) => x.connected)), 'all connected');

  t.equal((await g.h.request('DELETE', `/v1/api-keys/${revoked.id}`)).status, 204);
  t.equal(await within(w.revoked.closed, 'revoked key socket closed'), 4403, 'revoked through the API: closed');
  await sql`delete from api_keys where id = ${deleted.id}`;
  t.equal(await within(w.deleted.closed, 'deleted key socket closed'), 4403, 'deleted by hand: closed');
  await sql`update api_keys set scopes = '{read}' where id = ${downscoped.id}`;
  t.equal(await within(w.downscoped.closed, 'downscoped key socket closed'), 4403, 'downscoped: closed');

  // The other key's socket is still open and still served.
  t.same(w.upheld.closes, [], 'the untouched key keeps its socket');
  const actor = (await g.services.apiKeys.authenticate(g.h.token))!;
  const { run } = await g.services.runs.trigger(actor, sync.id);
  await g.services.runs.cancel(actor, run.id);
  await within(
    (async () => {
      while (!w.upheld.events.some((e) => e.data?.runUpdated?.status === 'cancelled')) await new Promise((r) => setTimeout(r, 50));
    })(),
    'an event on the upheld socket',
  );
  for (const x of [w.revoked, w.deleted, w.downscoped]) t.notOk(x.events.some((e) => e.data?.runUpdated?.runId === run.id), 'closed sockets got nothing after');
});

t.test('events agree with their run, are not repeated, and a terminal run has no phase (events, REST, GraphQL)', async (t) => {
  const g = await startGraphql(t);
  const { actor, sync } = await setup(g);
  const sql = postgres(g.h.databaseUrl, { max: 1, onnotice: () => {} });
  t.teardown(() => sql.end({ timeout: 1 }));
  const { run } = await g.services.runs.trigger(actor, sync.id);
  const w = watch(t, g.url, g.h.token, sync.id);
  await within(w.connected, 'connected');
  const notify = (status: string, phase: string | null) =>
    sql`select pg_notify('backhaul_runs', ${JSON.stringify({ runId: run.id, syncId: sync.id, workspaceId: actor.workspaceId, status, phase })})`;
  const until = (pred: () => boolean, what: string) =>
    within(
      (async () => {
        while (!pred()) await new Promise((r) => setTimeout(r, 50));
      })(),
      what,
    );

  // The subscription goes live asynchronously: notify the run's state until an event arrives.
  await sql`update runs set status = 'running', phase = 'querying', started_at = now() where id = ${run.id}`;
  for (let i = 0; i < 150 && !w.events.length; i++) {
    await notify('running', 'querying');
    await new Promise((r) => setTimeout(r, 100));
  }
  t.ok(w.events.length, 'the subscription is live');
  // The engine publishing the same phase twice (and any repeats above) is one event.
  await notify('running', 'querying');
  await notify('running', 'querying');
  await sql`update runs set phase = 'diffing' where id = ${run.id}`;
  await notify('running', 'diffing');
  await notify('running', 'diffing');
  // An event carries the run as it is when the event is built: the diffing event is awaited
  // before the row moves on (else, on a loaded machine, it may be built from the finished row).
  await until(() => w.events.some((e) => e.data.runUpdated.runId === run.id && e.data.runUpdated.phase === 'diffing'), 'diffing event');
  await sql`update runs set status = 'succeeded', phase = 'finalizing', finished_at = now() where id = ${run.id}`;
  await notify('succeeded', 'finalizing');
  await notify('succeeded', 'finalizing');
  await until(() => w.events.some((e) => e.data.runUpdated.status === 'succeeded'), 'terminal event');
  // Anything still in flight would have been sent before a later, distinct notification: send one
  // for another run of this sync and wait for it, then look at what came before.
  const { run: later } = await g.services.runs.trigger(actor, sync.id);
  await until(() => w.events.some((e) => e.data.runUpdated.runId === later.id), 'marker event');
  const seen = w.events.map((e) => e.data.runUpdated).filter((u) => u.runId === run.id);
  t.same(
    seen.map((u) => [u.status, u.phase]),
    [
      ['running', 'querying'],
      ['running', 'diffing'],
      ['succeeded', null],
    ],
    'one event per state, in order',
  );
  for (const u of seen) {
    t.equal(u.status, u.run.status, 'status agrees with the run');
    t.equal(u.phase, u.run.phase, 'phase agrees with the run');
  }

  // REST and GraphQL views of the terminal run: phase null, though the row still says finalizing.
  const rest = await g.h.request('GET', `/v1/runs/${run.id}`);
  t.equal(rest.body.status, 'succeeded');
  t.equal(rest.body.phase, null, 'REST: no phase once terminal');
  const gql = await g.data(`{ run(id: "${run.id}") { status phase } }`);
  t.same(gql.run, { status: 'succeeded', phase: null }, 'GraphQL: no phase once terminal');
  const [row] = await sql`select phase from runs where id = ${run.id}`;
  t.equal(row.phase, 'finalizing', '(the stored row kept its last phase)');
});
