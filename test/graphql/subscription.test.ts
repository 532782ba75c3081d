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
    this.ws.addEventListener('close', (ev) => {
      this.closed = true;
      this.closeCode = ev.code;
      for (const w of this.waiters.splice(0)) w();
    });
  }

  closeCode: number | undefined;

  /** The close code, once the server closed the socket (throws after the timeout). */
  async closedWith(timeoutMs = 5000): Promise<number | undefined> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed) {
      if (Date.now() > deadline) throw new Error(`not closed; got ${JSON.stringify(this.messages)}`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 100);
      });
    }
    return this.closeCode;
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
  // An event describes the run as it is when delivered: this one is still queued, whatever the
  // notification said.
  const payload = { runId: run.id, syncId: sync.id, workspaceId: actor.workspaceId, status: 'running', phase: 'querying' };
  let first: any;
  for (let i = 0; i < 50 && !first; i++) {
    await notify(payload);
    first = await client.next((m) => m.type === 'next' && m.id === '1', 200).catch(() => undefined);
  }
  t.ok(first, 'an event arrived');
  t.same(first.payload.data.runUpdated, {
    runId: run.id,
    syncId: sync.id,
    status: 'queued',
    phase: null,
    run: { id: run.id, status: 'queued', sync: { slug: 'watched' } },
  });

  // Let any duplicates from the retry loop land (they say the same thing: not sent again), then
  // check filtering in NOTIFY order: the foreign notifications come first, so if they were
  // delivered they would be seen before the last.
  await new Promise((r) => setTimeout(r, 300));
  t.equal(client.messages.filter((m) => m.type === 'next').length, 1, 'repeated notifications of one state: one event');
  const mark = client.messages.length;
  await notifier`update runs set status = 'running', phase = 'querying', started_at = now() where id = ${run.id}`;
  await notify({ ...payload, syncId: other.id, status: 'failed' });
  await notify({ ...payload, workspaceId: 'ws_someoneelse', status: 'failed' });
  await notify({ garbage: true });
  await notifier`select pg_notify('backhaul_runs', 'not json')`;
  await notify(payload);
  const running = await client.next((m) => m.type === 'next', 5000, mark);
  t.same(running.payload.data.runUpdated, { runId: run.id, syncId: sync.id, status: 'running', phase: 'querying', run: { id: run.id, status: 'running', sync: { slug: 'watched' } } });
  await new Promise((r) => setTimeout(r, 300));
  t.equal(client.messages.slice(mark).filter((m) => m.type === 'next').length, 1, 'only the matching notification was delivered');

  // A late notification (it says querying; the run is diffing now) describes the run as it is.
  const mark2 = client.messages.length;
  await notifier`update runs set phase = 'diffing' where id = ${run.id}`;
  await notify(payload);
  await notify(payload);
  const diffing = await client.next((m) => m.type === 'next', 5000, mark2);
  t.equal(diffing.payload.data.runUpdated.phase, 'diffing');
  t.equal(diffing.payload.data.runUpdated.status, 'running');

  // A terminal run has no phase, in the event and in the run (the engine may leave one in the row).
  await notifier`update runs set status = 'succeeded', phase = 'finalizing', finished_at = now() where id = ${run.id}`;
  await notify({ ...payload, status: 'succeeded', phase: 'finalizing' });
  const done = await client.next((m) => m.type === 'next' && m.payload.data.runUpdated.status === 'succeeded', 5000, mark2);
  t.equal(done.payload.data.runUpdated.phase, null);
  t.same(done.payload.data.runUpdated.run, { id: run.id, status: 'succeeded', sync: { slug: 'watched' } });
  await new Promise((r) => setTimeout(r, 300));
  t.equal(client.messages.slice(mark2).filter((m) => m.type === 'next').length, 2, 'diffing once, succeeded once');

  // The engine's own publishRun (via the runs service) reaches the subscriber too.
  const { run: run2 } = await s.runs.trigger(actor, sync.id);
  await s.runs.cancel(actor, run2.id);
  const cancelled = await client.next((m) => m.type === 'next' && m.payload.data.runUpdated.status === 'cancelled');
  t.equal(cancelled.payload.data.runUpdated.run.status, 'cancelled');
  t.equal(cancelled.payload.data.runUpdated.runId, run2.id);
  t.equal(cancelled.payload.data.runUpdated.phase, null);

  // Stop: no more events.
  client.send({ id: '1', type: 'complete' });
  await new Promise((r) => setTimeout(r, 200));
  const afterStop = client.messages.length;
  await notify(payload);
  await new Promise((r) => setTimeout(r, 300));
  t.equal(client.messages.slice(afterStop).filter((m) => m.type === 'next').length, 0, 'no events after complete');
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

  // graphql-transport-ws: a refused connection_init closes the socket with 4403 Forbidden.
  for (const payload of [undefined, { authorization: 'Bearer bh_wrong' }]) {
    const c = new WsClient(wsUrl);
    await c.opened();
    c.send({ type: 'connection_init', payload });
    const code = await c.closedWith();
    t.equal(code, 4403, `refused: ${JSON.stringify(payload)}`);
    t.same(c.messages, [], 'no message outside the protocol (no connection_error)');
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
