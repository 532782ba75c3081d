import postgres from 'postgres';
import t from 'tap';
import { httpConnectionInput, MODEL_SQL, pgConnectionInput, startGraphql } from '../helpers/graphql.ts';

// runUpdated over a real WebSocket (graphql-transport-ws), fed by PostgreSQL LISTEN: a NOTIFY
// sent from another connection (as another process would) reaches the subscriber; notifications
// for other syncs or other workspaces do not.

class WsClient {
  readonly messages: any[] = [];
  private readonly ws: WebSocket;
  private waiters: (() => void)[] = [];
  closed = false;

  constructor(url: string) {
    this.ws = new WebSocket(url, 'graphql-transport-ws');
    this.ws.addEventListener('message', (ev) => {
      this.messages.push(JSON.parse(String(ev.data)));
      for (const w of this.waiters.splice(0)) w();
    });
    this.ws.addEventListener('close', () => {
      this.closed = true;
      for (const w of this.waiters.splice(0)) w();
    });
  }

  opened(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.ws.addEventListener('open', () => resolve());
      this.ws.addEventListener('error', () => reject(new Error('websocket error')));
    });
  }

  send(msg: unknown): void {
    this.ws.send(JSON.stringify(msg));
  }

  /** The first message (from `from` on) matching, or throws after the timeout. */
  async next(match: (m: any) => boolean, timeoutMs = 5000, from = 0): Promise<any> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.messages.slice(from).find(match);
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`no matching message; got ${JSON.stringify(this.messages)}`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 100);
      });
    }
  }

  close(): void {
    this.ws.close();
  }
}

const SUBSCRIPTION = `subscription($s: ID!) { runUpdated(syncId: $s) { runId syncId status phase run { id status sync { slug } } } }`;

t.test('runUpdated receives NOTIFYs from another connection, filtered by sync and workspace', async (t) => {
  const g = await startGraphql(t);
  const actor = (await g.services.apiKeys.authenticate(g.h.token))!;
  const s = g.services;
  const src = await s.connections.create(actor, pgConnectionInput('src') as never);
  const dst = await s.connections.create(actor, httpConnectionInput('dst') as never);
  const model = await s.models.create(actor, { slug: 'm', name: 'M', connectionId: src.id, sql: MODEL_SQL, primaryKey: 'id' }, { validate: false });
  const mk = (slug: string) =>
    s.syncs.create(actor, { slug, name: slug, modelId: model.id, destinationId: dst.id, object: 'contacts', mode: 'upsert', matchKey: { sourceColumn: 'email', destinationField: 'email' } });
  const sync = await mk('watched');
  const other = await mk('other');
  const { run } = await s.runs.trigger(actor, sync.id);

  const wsUrl = `${g.url.replace(/^http/, 'ws')}/graphql`;
  const client = new WsClient(wsUrl);
  t.teardown(() => client.close());
  await client.opened();
  client.send({ type: 'connection_init', payload: { authorization: `Bearer ${g.h.token}` } });
  await client.next((m) => m.type === 'connection_ack');
  client.send({ id: '1', type: 'subscribe', payload: { query: SUBSCRIPTION, variables: { s: 'watched' } } });

  // A separate connection, as the engine in another process would use.
  const notifier = postgres(g.h.databaseUrl, { max: 1, onnotice: () => {} });
  t.teardown(() => notifier.end({ timeout: 1 }));
  const notify = (p: Record<string, unknown>) => notifier`select pg_notify('backhaul_runs', ${JSON.stringify(p)})`;

  // The subscription is registered asynchronously after "subscribe": notify until it is live.
  const payload = { runId: run.id, syncId: sync.id, workspaceId: actor.workspaceId, status: 'running', phase: 'querying' };
  let first: any;
  for (let i = 0; i < 150 && !first; i++) {
    await notify(payload);
    first = await client.next((m) => m.type === 'next' && m.id === '1', 200).catch(() => undefined);
  }
  t.ok(first, 'an event arrived');
  t.same(first.payload.data.runUpdated, {
    runId: run.id,
    syncId: sync.id,
    status: 'running',
    phase: 'querying',
    run: { id: run.id, status: 'queued', sync: { slug: 'watched' } },
  });

  // NOTIFYs from one connection arrive in the order sent, so a marker notification is a barrier:
  // once the subscriber has it, everything sent before it has been delivered (or dropped).
  let markers = 0;
  const barrier = async () => {
    const phase = `marker-${++markers}`;
    await notify({ ...payload, phase });
    const got = await client.next((m) => m.type === 'next' && m.id === '1' && m.payload.data.runUpdated.phase === phase, 20_000);
    return client.messages.indexOf(got);
  };
  // Duplicates from the retry loop above land before the first marker.
  const mark = (await barrier()) + 1;
  await notify({ ...payload, syncId: other.id, status: 'failed' });
  await notify({ ...payload, workspaceId: 'ws_someoneelse', status: 'failed' });
  await notify({ garbage: true });
  await notifier`select pg_notify('backhaul_runs', 'not json')`;
  await notify({ ...payload, status: 'succeeded', phase: null });
  const end = await barrier();
  const between = client.messages.slice(mark, end).filter((m) => m.type === 'next');
  t.equal(between.length, 1, 'only the matching notification was delivered');
  t.equal(between[0]?.payload.data.runUpdated.status, 'succeeded');
  t.equal(between[0]?.payload.data.runUpdated.phase, null);

  // The engine's own publishRun (via the runs service) reaches the subscriber too.
  await s.runs.cancel(actor, run.id);
  const cancelled = await client.next((m) => m.type === 'next' && m.payload.data.runUpdated.status === 'cancelled');
  t.equal(cancelled.payload.data.runUpdated.run.status, 'cancelled');

  // Stop: no more events. A second subscription on the same socket, subscribed after the
  // "complete", is the witness: a notification that reaches it would have reached a live first one.
  client.send({ id: '1', type: 'complete' });
  const afterStop = client.messages.length;
  client.send({ id: '2', type: 'subscribe', payload: { query: SUBSCRIPTION, variables: { s: 'watched' } } });
  let witnessed: any;
  for (let i = 0; i < 150 && !witnessed; i++) {
    await notify(payload);
    witnessed = await client.next((m) => m.type === 'next' && m.id === '2', 200, afterStop).catch(() => undefined);
  }
  t.ok(witnessed, 'the second subscription got the notification');
  t.equal(client.messages.slice(afterStop).filter((m) => m.type === 'next' && m.id === '1').length, 0, 'no events after complete');
});

t.test('subscriptions: authentication, isolation, validation and limits', async (t) => {
  const g = await startGraphql(t);
  const wsUrl = `${g.url.replace(/^http/, 'ws')}/graphql`;
  const actor = (await g.services.apiKeys.authenticate(g.h.token))!;
  const src = await g.services.connections.create(actor, pgConnectionInput('src') as never);
  const dst = await g.services.connections.create(actor, httpConnectionInput('dst') as never);
  const model = await g.services.models.create(actor, { slug: 'm', name: 'M', connectionId: src.id, sql: MODEL_SQL, primaryKey: 'id' }, { validate: false });
  const sync = await g.services.syncs.create(actor, {
    slug: 'mine',
    name: 'mine',
    modelId: model.id,
    destinationId: dst.id,
    object: 'contacts',
    mode: 'upsert',
    matchKey: { sourceColumn: 'email', destinationField: 'email' },
  });

  for (const payload of [undefined, { authorization: 'Bearer bh_wrong' }]) {
    const c = new WsClient(wsUrl);
    await c.opened();
    c.send({ type: 'connection_init', payload });
    const err = await c.next((m) => m.type === 'connection_error');
    t.same(err.payload, { message: 'Forbidden' }, `refused: ${JSON.stringify(payload)}`);
    c.close();
  }

  const ws = await g.services.apiKeys.createWorkspace(actor, { slug: 'acme', name: 'Acme' });
  const c = new WsClient(wsUrl);
  t.teardown(() => c.close());
  await c.opened();
  c.send({ type: 'connection_init', payload: { headers: { Authorization: `Bearer ${ws.apiKey.token}` } } });
  await c.next((m) => m.type === 'connection_ack');

  c.send({ id: 'a', type: 'subscribe', payload: { query: SUBSCRIPTION, variables: { s: sync.id } } });
  const foreign = await c.next((m) => m.id === 'a' && m.type === 'error');
  t.equal(foreign.payload[0].extensions.code, 'not_found', "another workspace's sync is not found");

  c.send({ id: 'b', type: 'subscribe', payload: { query: `subscription { runUpdated(syncId: "x") { nope } }` } });
  const invalid = await c.next((m) => m.id === 'b' && m.type === 'error');
  t.equal(invalid.payload[0].extensions.code, 'graphql_validation_failed');

  const deep = `subscription { runUpdated(syncId: "x") { run { sync { model { syncs { nodes { model { syncs { nodes { lastRun { id } } } } } } } } } } }`;
  c.send({ id: 'c', type: 'subscribe', payload: { query: deep } });
  const tooDeep = await c.next((m) => m.id === 'c' && m.type === 'error');
  t.equal(tooDeep.payload[0].extensions.code, 'query_too_deep');
});
