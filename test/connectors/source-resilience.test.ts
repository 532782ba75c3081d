import t from 'tap';
import { PostgresSource } from '../../src/connectors/sources/postgres.ts';
import { MysqlSource } from '../../src/connectors/sources/mysql.ts';
import type { SourceConnector } from '../../src/connectors/types.ts';
import { collect, expectCode, mysqlAdmin, mysqlConfig, pgAdmin, pgConfig, uniqueName } from '../fakes/databases.ts';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.ts';

// Issue 12 item 4, source side: a source that dies, stalls or is cancelled mid-read never holds
// the caller. Outages are simulated with a TCP proxy in front of the shared servers (never
// stopped). A regression here hangs: each subtest has a timeout far above what a pass needs.

const TIMEOUT = { timeout: 90_000 };

/** Waits until `check()` is true, polling (a database state we cannot subscribe to). */
async function until(check: () => Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Reads the first batch of `it`, runs `fault`, then drains: resolves with the error it fails with. */
async function faultAfterFirstBatch(it: AsyncIterable<unknown[]>, fault: () => unknown): Promise<unknown> {
  let n = 0;
  try {
    for await (const _ of it) if (++n === 1) await fault();
  } catch (e) {
    return e;
  }
  throw new Error(`the stream ended normally after ${n} batches`);
}

const admin = pgAdmin();
const schema = uniqueName();
const pg = pgConfig();
let proxy: TcpProxy;

t.before(async () => {
  proxy = await startTcpProxy({ host: pg.config.host, port: pg.config.port });
  await admin.unsafe(`create schema ${schema}`);
  // A model that ends its own session, through a function (the guard refuses the call written out).
  await admin.unsafe(`create function ${schema}.die() returns boolean language sql as 'select pg_terminate_backend(pg_backend_pid())'`);
});
t.teardown(async () => {
  await proxy.close();
  await admin.unsafe(`drop schema if exists ${schema} cascade`);
  await admin.end();
});

const viaProxy = (overrides = {}) => new PostgresSource({ ...pg.config, host: proxy.host, port: proxy.port, ...overrides }, pg.password ? { password: pg.password } : {});
const direct = (overrides = {}) => new PostgresSource({ ...pg.config, ...overrides }, pg.password ? { password: pg.password } : {});
const BIG = `select g, repeat('x', 200) as pad from generate_series(1, 2000000) g`;

t.test('postgres: a connection reset mid-read fails source_unavailable and frees the connection', TIMEOUT, async (t) => {
  const s = viaProxy();
  t.teardown(() => s.close());
  const e = await faultAfterFirstBatch(s.stream(BIG, { batchSize: 500 }), () => proxy.cutAll());
  t.equal((e as { code?: string }).code, 'source_unavailable', String(e));
  t.equal((e as { classification?: string }).classification, 'retryable');
  await proxy.waitFor(() => proxy.open === 0);
  t.pass('no connection left open through the proxy');
  // The source still works afterwards.
  t.same((await s.preview('select 1 as one', 1)).rows, [{ one: 1 }]);
});

t.test('postgres: a stalled connection fails within the statement timeout plus a grace', TIMEOUT, async (t) => {
  const s = viaProxy({ statementTimeoutMs: 3000 });
  t.teardown(async () => {
    proxy.resume();
    await s.close();
  });
  const e = await faultAfterFirstBatch(s.stream(BIG, { batchSize: 500 }), () => proxy.pause());
  t.equal((e as { code?: string }).code, 'source_unavailable', String(e));
  proxy.resume();
});

t.test('postgres: a model that ends its own session fails stream, preview and columns cleanly', TIMEOUT, async (t) => {
  const s = direct();
  t.teardown(() => s.close());
  const sql = `select ${schema}.die() as gone`;
  const e1 = await expectCode(t, collect(s.stream(sql)), 'source_unavailable');
  t.equal(e1.classification, 'retryable');
  await expectCode(t, s.preview(sql, 10), 'source_unavailable', 'preview answers instead of hanging');
  // columns() only describes (the function is not run): it works; with the connection cut under it, it fails cleanly.
  t.same((await s.columns(sql)).map((c) => c.name), ['gone']);
  const p = viaProxy();
  t.teardown(() => p.close());
  proxy.pause();
  const cols = p.columns(sql);
  await proxy.waitFor(() => proxy.open > 0);
  proxy.cutAll();
  proxy.resume();
  const e3 = await expectCode(t, cols, 'source_unavailable');
  t.equal(e3.classification, 'retryable');
  // Written out, the call is refused before it reaches the server.
  await expectCode(t, s.preview('select pg_terminate_backend(pg_backend_pid())', 1), 'forbidden_sql');
});

t.test('postgres: abort while the server computes the first batch cancels the server-side query', TIMEOUT, async (t) => {
  const s = direct({ statementTimeoutMs: 600_000 });
  t.teardown(() => s.close());
  const marker = uniqueName('bh_sleep');
  const ac = new AbortController();
  const running = async () =>
    (await admin.unsafe(`select count(*)::int as n from pg_stat_activity where state = 'active' and query like $1 and pid <> pg_backend_pid()`, [`%${marker}%`]))[0].n > 0;
  const p = collect(s.stream(`select pg_sleep(600) as ${marker}`, { signal: ac.signal }));
  await until(running, 'the query to run on the server');
  ac.abort();
  await expectCode(t, p, 'cancelled');
  await until(async () => !(await running()), 'the server-side query to stop');
  t.pass('the server-side query is gone');
});

t.test('postgres: abort while connecting returns at once', TIMEOUT, async (t) => {
  const s = viaProxy();
  t.teardown(async () => {
    proxy.resume();
    await s.close();
  });
  proxy.pause(); // connections are accepted but nothing answers
  const ac = new AbortController();
  const accepted = proxy.accepted;
  const p = collect(s.stream('select 1', { signal: ac.signal }));
  await proxy.waitFor(() => proxy.accepted > accepted);
  ac.abort();
  await expectCode(t, p, 'cancelled');
  proxy.resume();
});

const my = await mysqlAdmin();
if (!my) {
  t.skip('MariaDB not reachable at 127.0.0.1:3306', () => {});
} else {
  const db = uniqueName();
  const config = mysqlConfig({ database: db });
  let myProxy: TcpProxy;
  t.before(async () => {
    myProxy = await startTcpProxy({ host: config.host, port: config.port });
    await my.query(`CREATE DATABASE ${db}`);
    await my.query(`CREATE TABLE ${db}.digits (d INT)`);
    await my.query(`INSERT INTO ${db}.digits VALUES (0),(1),(2),(3),(4),(5),(6),(7),(8),(9)`);
  });
  t.teardown(async () => {
    await myProxy.close();
    await my.query(`DROP DATABASE IF EXISTS ${db}`);
    await my.end();
  });
  const MANY = 'SELECT a.d AS a, b.d AS b, c.d AS c, d.d AS d, e.d AS e, f.d AS f, REPEAT(\'x\', 200) AS pad FROM digits a, digits b, digits c, digits d, digits e, digits f';
  const open = (o = {}): SourceConnector => new MysqlSource({ ...config, ...o }, {});

  t.test('mariadb: KILL <id> mid-read fails source_unavailable', TIMEOUT, async (t) => {
    const s = open();
    t.teardown(() => s.close());
    const marker = uniqueName('bh_kill');
    const e = await faultAfterFirstBatch(s.stream(`${MANY} /* ${marker} */`, { batchSize: 500 }), async () => {
      const [rows] = await my.query(`SELECT ID AS id FROM information_schema.PROCESSLIST WHERE INFO LIKE ? AND ID <> CONNECTION_ID()`, [`%${marker}%`]);
      const id = (rows as { id: number }[])[0]?.id;
      t.ok(id, 'found the reading connection');
      await my.query(`KILL ${Number(id)}`);
    });
    t.equal((e as { code?: string }).code, 'source_unavailable', String(e));
    t.equal((e as { classification?: string }).classification, 'retryable');
  });

  t.test('mariadb: a connection reset mid-read fails source_unavailable and frees the connection', TIMEOUT, async (t) => {
    const s = open({ host: myProxy.host, port: myProxy.port });
    t.teardown(() => s.close());
    const e = await faultAfterFirstBatch(s.stream(MANY, { batchSize: 500 }), () => myProxy.cutAll());
    t.equal((e as { code?: string }).code, 'source_unavailable', String(e));
    await myProxy.waitFor(() => myProxy.open === 0);
    t.same((await s.preview('SELECT 1 AS one', 1)).rows, [{ one: 1 }], 'the source still works');
  });

  t.test('mariadb: a stalled connection fails within the statement timeout plus a grace', TIMEOUT, async (t) => {
    const s = open({ host: myProxy.host, port: myProxy.port, statementTimeoutMs: 3000 });
    t.teardown(async () => {
      myProxy.resume();
      await s.close();
    });
    const e = await faultAfterFirstBatch(s.stream(MANY, { batchSize: 500 }), () => myProxy.pause());
    t.equal((e as { code?: string }).code, 'source_unavailable', String(e));
    myProxy.resume();
  });

  t.test('mariadb: abort while connecting returns at once', TIMEOUT, async (t) => {
    const s = open({ host: myProxy.host, port: myProxy.port });
    t.teardown(async () => {
      myProxy.resume();
      await s.close();
    });
    myProxy.pause();
    const ac = new AbortController();
    const accepted = myProxy.accepted;
    const p = collect(s.stream('SELECT 1', { signal: ac.signal }));
    await myProxy.waitFor(() => myProxy.accepted > accepted);
    ac.abort();
    await expectCode(t, p, 'cancelled');
    myProxy.resume();
  });

  t.test('mariadb: abort while the server computes cancels the server-side query (KILL QUERY)', TIMEOUT, async (t) => {
    const s = open({ statementTimeoutMs: 600_000 });
    t.teardown(() => s.close());
    const marker = uniqueName('bh_sleep');
    const running = async () => {
      const [rows] = await my.query(`SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE INFO LIKE ? AND COMMAND = 'Query' AND ID <> CONNECTION_ID()`, [`%${marker}%`]);
      return Number((rows as { n: number }[])[0].n) > 0;
    };
    const ac = new AbortController();
    const p = collect(s.stream(`SELECT SLEEP(600) AS ${marker}`, { signal: ac.signal }));
    await until(running, 'the query to run on the server');
    ac.abort();
    await expectCode(t, p, 'cancelled');
    await until(async () => !(await running()), 'the server-side query to stop');
    t.pass('the server-side query is gone');
  });
}
