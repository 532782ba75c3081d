import t from 'tap';
import postgres from 'postgres';
import fc from 'fast-check';
import { ConnectorError } from '../../src/errors.ts';
import { connectDatabase, isConnectionError, isDatabaseConnectionError, postgresGuarded } from '../../src/db/client.ts';
import { freshDatabase } from '../helpers/backhaul.ts';
import { startPgProxy } from './pg-proxy.ts';

// The control database's client (postgres.js) when its connection is lost, through a TCP proxy
// that resets it (scripts/patch-postgres.mjs guards the defects seen here):
//  - a transaction interrupted mid-way rejects with a connection error; its ROLLBACK, sent on
//    the dead connection, must not throw from a timer (uncaught: the process would end);
//  - the pool's connection slot works again once the database is back (a flush cancelled by
//    the close must not leave the next session's startup message unsent until connect_timeout);
//  - queries queued when the connection drops each settle (answered after the reconnect, or
//    rejected), none hangs.

const ticks = async () => {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  await new Promise((r) => setTimeout(r, 100));
};

t.test('postgres.js rides out a lost connection', async (t) => {
  t.ok(postgresGuarded(), 'the installed postgres.js carries the guards');
  const url = await freshDatabase(t);
  const proxy = await startPgProxy(url);
  t.teardown(() => proxy.close());
  const uncaught: unknown[] = [];
  const onUncaught = (e: unknown) => uncaught.push(e);
  // tap reports uncaught exceptions itself; this records them to assert on as well.
  process.on('uncaughtException', onUncaught);
  t.teardown(() => void process.off('uncaughtException', onUncaught));

  // One connection, so that every step reuses the slot the loss left behind.
  const { sql, close } = connectDatabase(proxy.url, { max: 1 });
  t.teardown(() => close());
  const db = postgres(url, { max: 1, onnotice: () => {} });
  t.teardown(() => db.end());
  await sql`create table if not exists t (id int primary key)`;

  for (let round = 1; round <= 3; round++) {
    const err = await sql
      .begin(async (tx) => {
        await tx`insert into t values (${round})`;
        proxy.cut(round % 2 ? 'close' : 'reset');
        await tx`insert into t values (${round + 100})`;
      })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    await ticks();
    t.ok(err && isConnectionError(err), `round ${round}: the interrupted transaction rejects with a connection error (${(err as Error)?.message})`);
    t.ok(isDatabaseConnectionError(err), 'which the API reports as database_unavailable');
    t.same(uncaught, [], `round ${round}: nothing was thrown outside the caller`);
    const lost = await sql`select 1`.then(
      () => 'answered',
      (e: unknown) => (isConnectionError(e) ? 'connection error' : String(e)),
    );
    t.equal(lost, 'connection error', 'while the database is away a query fails at once');
    proxy.restore();
    const [{ n }] = await sql<{ n: number }[]>`select count(*)::int as n from t where id in (${round}, ${round + 100})`;
    t.equal(n, 0, `round ${round}: the connection slot works again once the database is back, and nothing of the transaction was committed`);
  }

  // Many writes queued (pipelined) when the connection drops: each rejects, none hangs.
  const pending = Array.from({ length: 20 }, (_, i) => sql`select ${i}::int as i, pg_sleep(0.05)`.then(() => 'ok', (e: unknown) => (isConnectionError(e) ? 'lost' : String(e))));
  await new Promise((r) => setTimeout(r, 20));
  proxy.cut();
  await new Promise((r) => setTimeout(r, 300));
  proxy.restore();
  const outcomes = await Promise.all(pending);
  t.ok(outcomes.every((o) => o === 'ok' || o === 'lost'), `every queued query settled: ${[...new Set(outcomes)].join(', ')}`);
  await ticks();
  t.same(uncaught, [], 'nothing was thrown outside the callers');
  t.same(await sql`select 1 as x`, [{ x: 1 }], 'and the pool answers again');
});

t.test('what counts as the control database being unavailable', async (t) => {
  const sock = (code: string) => Object.assign(new Error(`read ${code}`), { code });
  const fromQuery = (e: Error) => Object.defineProperty(e, 'query', { value: 'select 1', enumerable: false });
  t.ok(isConnectionError(sock('ECONNRESET')) && isConnectionError(sock('ECONNREFUSED')) && isConnectionError(sock('CONNECTION_CLOSED')));
  t.ok(isConnectionError(sock('57P01')), 'admin_shutdown (PostgreSQL stopping)');
  t.ok(isConnectionError(sock('57P03')), 'cannot_connect_now (PostgreSQL starting)');
  t.ok(isConnectionError(sock('08006')), 'class 08: connection_failure');
  t.notOk(isConnectionError(sock('08P01')), 'but not protocol_violation');
  t.notOk(isConnectionError(sock('23505')), 'a statement error is not');
  t.ok(isConnectionError(new Error('Connection terminated unexpectedly')), "node-postgres's dropped session");
  t.ok(isConnectionError(new Error('Failed query', { cause: sock('ECONNRESET') })), 'through a wrapper (drizzle)');
  t.notOk(isDatabaseConnectionError(sock('ECONNREFUSED')), 'a socket error from elsewhere (a destination, a source) is not the control database');
  t.ok(isDatabaseConnectionError(fromQuery(sock('ECONNREFUSED'))), 'one a database client attached its statement to is');
  t.ok(isDatabaseConnectionError(new Error('Failed query', { cause: fromQuery(sock('ECONNRESET')) })));
  t.ok(isDatabaseConnectionError(sock('CONNECTION_CLOSED')) && isDatabaseConnectionError(sock('57P01')), "postgres.js's and PostgreSQL's own codes are");
  // A connector's error is about its remote (a source or destination database that happens to be
  // PostgreSQL too), whatever socket error it carries as its cause, at any depth: treating it as
  // the control database would make the worker wait and re-run the remote call forever.
  fc.assert(
    fc.property(
      fc.constantFrom('ECONNRESET', 'ECONNREFUSED', 'CONNECTION_CLOSED', 'CONNECTION_DESTROYED', '57P01', '57P03', '08006', '08001'),
      fc.nat({ max: 2 }),
      fc.nat({ max: 2 }),
      fc.constantFrom('source_unavailable', 'connection_lost', 'destination_unavailable'),
      (code, inner, outer, connectorCode) => {
        let cause: Error = fromQuery(sock(code));
        for (let i = 0; i < inner; i++) cause = new Error('wrapped', { cause });
        if (!isConnectionError(cause)) return false; // the bare error is the control database's kind
        let e: Error = new ConnectorError(connectorCode, 'the remote is gone', { classification: 'retryable', cause });
        for (let i = 0; i < outer; i++) e = new Error('Failed run', { cause: e });
        return !isConnectionError(e) && !isDatabaseConnectionError(e);
      },
    ),
  );
  t.pass("a connector's error is never the control database's, whatever connection error it wraps");
});
