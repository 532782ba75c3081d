import t, { type Test } from 'tap';
import { PostgresSource } from '../../src/connectors/sources/postgres.ts';
import { collect, expectCode, pgAdmin, pgConfig, uniqueName } from '../fakes/databases.ts';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.ts';

// A PostgreSQL source connection can die at any point of its life: while connecting, reading the
// array types, at BEGIN, with the query in flight, between cursor fetches, while a cancel request
// is sent, at ROLLBACK, while closing, or under a close() of the whole source. At each point the operation fails with
// its own error (source_unavailable, or cancelled when the caller aborted) and no promise of the
// driver rejects unhandled (which in the server process is an unhandled rejection outside any
// run). The cut is made by a TCP proxy the moment the client sends the message of that point.

const TIMEOUT = { timeout: 90_000 };

const admin = pgAdmin();
const schema = uniqueName();
const pg = pgConfig();
let proxy: TcpProxy;

// Every unhandled rejection in this process, by any promise (tap reports them too, but without
// saying which cut point left them).
const unhandled: unknown[] = [];
const onUnhandled = (e: unknown) => void unhandled.push(e);
process.on('unhandledRejection', onUnhandled);

t.before(async () => {
  proxy = await startTcpProxy({ host: pg.config.host, port: pg.config.port });
  await admin.unsafe(`create schema ${schema}`);
  await admin.unsafe(`create table ${schema}.t (id int)`);
});
t.teardown(async () => {
  process.off('unhandledRejection', onUnhandled);
  await proxy.close();
  await admin.unsafe(`drop schema if exists ${schema} cascade`);
  await admin.end();
});

// A statement timeout ends a server-side sleep whose client was cut (the server does not notice a
// dead client while it sleeps).
const viaProxy = () =>
  new PostgresSource({ ...pg.config, host: proxy.host, port: proxy.port, statementTimeoutMs: 20_000 }, pg.password ? { password: pg.password } : {});

// PostgreSQL protocol, "Message Formats": what the client sends at each point.
const int32At = (c: Buffer, at: number) => (c.length >= at + 4 ? c.readInt32BE(at) : -1);
const isStartup = (c: Buffer) => int32At(c, 4) === 196608; // StartupMessage, protocol 3.0
const isCancelRequest = (c: Buffer) => int32At(c, 4) === 80877102;
const isTerminate = (c: Buffer) => c[0] === 0x58; // 'X'
const isExecuteOnly = (c: Buffer) => c[0] === 0x45; // 'E' first: a cursor fetch (no Parse before it)
const has = (text: string) => (c: Buffer) => c.includes(text);

const SLEEP = `select pg_sleep(30) as ${uniqueName('bh_cut')}`;
const MANY = 'select g from generate_series(1, 100000) g';

/** After the source let go of every socket, one more turn of the event loop: any rejection left unhandled has been reported. */
async function settled(s: PostgresSource): Promise<void> {
  await s.close();
  await proxy.waitFor(() => proxy.open === 0, 30_000);
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
}

function noUnhandled(t: Test): void {
  t.same(unhandled.splice(0).map((e) => String((e as Error)?.stack ?? e)), [], 'no promise rejected unhandled');
}

const points: { name: string; match: (c: Buffer) => boolean; when?: 'before' | 'after'; sql: string; batchSize?: number }[] = [
  { name: 'connecting (startup message)', match: isStartup, sql: 'select 1' },
  // Right after login the client reads which types are arrays (postgres.js's own query did so
  // outside every bound, and its promise rejected unhandled when the connection died under it).
  { name: 'the array-type query', match: has('typelem'), sql: 'select 1' },
  { name: 'BEGIN', match: has('begin read only'), sql: 'select 1' },
  { name: 'the query in flight', match: has('pg_sleep(30)'), when: 'after', sql: SLEEP },
  { name: 'a cursor fetch', match: isExecuteOnly, sql: MANY, batchSize: 10 },
];

for (const p of points) {
  t.test(`postgres stream: a cut at ${p.name} fails source_unavailable, nothing unhandled`, TIMEOUT, async (t) => {
    const s = viaProxy();
    const cut = proxy.cutOn('up', p.match, { when: p.when });
    const e = await expectCode(t, collect(s.stream(p.sql, { batchSize: p.batchSize ?? 1000 })), 'source_unavailable');
    t.equal(e.classification, 'retryable');
    await cut;
    await settled(s);
    noUnhandled(t);
  });
}

t.test('postgres stream: a cut of the cancel request after an abort still ends cancelled, nothing unhandled', TIMEOUT, async (t) => {
  const s = viaProxy();
  const ac = new AbortController();
  // The query reached the server: then the cancel request is cut as it is sent.
  const sent = proxy.sees('up', has('pg_sleep(30)'));
  const p = collect(s.stream(SLEEP, { signal: ac.signal }));
  await sent;
  // Only the cancel connection: the query keeps running, the read waits out its cancel bound.
  const cut = proxy.cutOn('up', isCancelRequest, { only: 'this' });
  ac.abort();
  await expectCode(t, p, 'cancelled');
  await cut;
  await settled(s);
  noUnhandled(t);
});

t.test('postgres stream: close() of the source while an abort sends its cancel request, nothing unhandled', TIMEOUT, async (t) => {
  const s = viaProxy();
  const ac = new AbortController();
  const sent = proxy.sees('up', has('pg_sleep(30)'));
  const p = collect(s.stream(SLEEP, { signal: ac.signal }));
  await sent;
  ac.abort();
  void s.close(); // as the engine does in its finally, without waiting for the read to end
  await expectCode(t, p, 'cancelled');
  await settled(s);
  noUnhandled(t);
});

t.test('postgres stream: a cut while closing after a full read loses nothing, nothing unhandled', TIMEOUT, async (t) => {
  const s = viaProxy();
  const cut = proxy.cutOn('up', isTerminate);
  const batches = await collect(s.stream('select g from generate_series(1, 25) g', { batchSize: 10 }));
  t.equal(batches.flat().length, 25);
  await cut;
  await settled(s);
  noUnhandled(t);
});

t.test('postgres preview: a cut at ROLLBACK fails source_unavailable, nothing unhandled', TIMEOUT, async (t) => {
  const s = viaProxy();
  // DECLARE refuses a data-modifying WITH (0A000): the preview rolls back and runs it as written.
  const cut = proxy.cutOn('up', has('rollback'));
  const e = await expectCode(t, s.preview(`with d as (delete from ${schema}.t returning id) select * from d`, 5), 'source_unavailable');
  t.equal(e.classification, 'retryable');
  await cut;
  await settled(s);
  noUnhandled(t);
});

t.test('postgres columns and test(): a cut at connecting fails cleanly, nothing unhandled', TIMEOUT, async (t) => {
  const s = viaProxy();
  const cut1 = proxy.cutOn('up', isStartup);
  await expectCode(t, s.columns('select 1 as one'), 'source_unavailable');
  await cut1;
  const cut2 = proxy.cutOn('up', has('select 1'));
  await t.rejects(s.test(), 'test() fails');
  await cut2;
  await settled(s);
  noUnhandled(t);
});
