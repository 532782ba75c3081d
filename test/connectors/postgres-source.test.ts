import t from 'tap';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { PostgresSource } from '../../src/connectors/sources/postgres.ts';
import { postgresType } from '../../src/connectors/postgres-type.ts';
import { closedPort, collect, expectCode, pgAdmin, pgConfig, uniqueName } from '../fakes/databases.ts';

v8.setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const admin = pgAdmin();
const schema = uniqueName();
const { config, password } = pgConfig();
const open = (overrides = {}) => new PostgresSource({ ...config, ...overrides }, password ? { password } : {});

t.before(async () => {
  await admin.unsafe(`create schema ${schema}`);
  await admin.unsafe(`create table ${schema}.people (
    id int8 primary key, big int8, amount numeric(30,10), seen_at timestamptz, local_at timestamp,
    born date, profile jsonb, doc json, active boolean, name text, score float8, tags text[])`);
  await admin.unsafe(`insert into ${schema}.people values
    (1, 9007199254740993, 12345678901234567890.0123456789, '2024-03-04 05:06:07.123456+02', '2024-01-02 03:04:05',
     '1990-12-31', '{"plan":"pro","seats":[1,2]}', '{"a":null}', true, 'Ada', 1.5, '{x,y}'),
    (2, 42, 0.1, null, null, null, null, null, false, 'Bob', null, null)`);
});
t.teardown(async () => {
  await admin.unsafe(`drop schema if exists ${schema} cascade`);
  await admin.end();
});

t.test('the type attaches the source factory', async (t) => {
  const s = postgresType.openSource!(config, password ? { password } : {}, { denyPrivateNetworks: false });
  await s.test();
  await s.close();
});

t.test('columns maps native types without reading rows', async (t) => {
  const s = open();
  t.teardown(() => s.close());
  const cols = await s.columns(`select * from ${schema}.people`);
  t.same(
    cols.map((c) => [c.name, c.type, c.nativeType]),
    [
      ['id', 'integer', 'bigint'], ['big', 'integer', 'bigint'], ['amount', 'decimal', 'numeric'],
      ['seen_at', 'timestamp', 'timestamp with time zone'], ['local_at', 'timestamp', 'timestamp without time zone'],
      ['born', 'date', 'date'], ['profile', 'json', 'jsonb'], ['doc', 'json', 'json'], ['active', 'boolean', 'boolean'],
      ['name', 'string', 'text'], ['score', 'decimal', 'double precision'], ['tags', 'json', 'text[]'],
    ],
  );
  // Executing this would divide by zero; describing it does not.
  const c2 = await s.columns(`select 1 / (count(*) - count(*)) as boom from ${schema}.people;`);
  t.same(c2, [{ name: 'boom', type: 'integer', nativeType: 'bigint' }]);
  await expectCode(t, s.columns('selec nope'), 'sql_error');
  await expectCode(t, s.columns(`select nope from ${schema}.people`), 'sql_error');
});

t.test('preview returns exact values in the common representation', async (t) => {
  const s = open();
  t.teardown(() => s.close());
  const { columns, rows } = await s.preview(`select * from ${schema}.people order by id`, 1);
  t.equal(columns.length, 12);
  t.equal(rows.length, 1, 'limit respected');
  t.same(rows[0], {
    id: 1,
    big: '9007199254740993',
    amount: '12345678901234567890.0123456789',
    seen_at: '2024-03-04T03:06:07.123456Z',
    local_at: '2024-01-02T03:04:05Z',
    born: '1990-12-31',
    profile: { plan: 'pro', seats: [1, 2] },
    doc: { a: null },
    active: true,
    name: 'Ada',
    score: 1.5,
    tags: ['x', 'y'],
  });
  const all = await s.preview(`select id, amount, active from ${schema}.people order by id`, 10);
  t.same(all.rows, [{ id: 1, amount: '12345678901234567890.0123456789', active: true }, { id: 2, amount: '0.1000000000', active: false }]);
});

t.test('stream yields batches of the requested size', async (t) => {
  const s = open();
  t.teardown(() => s.close());
  const batches = await collect(s.stream('select g as n from generate_series(1, 10) g order by g', { batchSize: 4 }));
  t.same(batches.map((b) => b.length), [4, 4, 2]);
  t.same(batches.flat().map((r) => r.n), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  // A consumer that stops early releases the connection (the pool has 3: more than 3 early exits must work).
  for (let i = 0; i < 5; i++) {
    for await (const b of s.stream('select g from generate_series(1, 100000) g', { batchSize: 10 })) {
      t.equal(b.length, 10);
      break;
    }
  }
  const ac = new AbortController();
  const it = s.stream('select g from generate_series(1, 100000) g', { batchSize: 10, signal: ac.signal });
  await expectCode(t, async () => {
    for await (const _ of it) ac.abort();
  }, 'cancelled');
});

t.test('a large result streams with bounded memory', async (t) => {
  const s = open();
  t.teardown(() => s.close());
  const rowsWanted = 200_000;
  gc();
  const base = process.memoryUsage().heapUsed;
  let peak = 0;
  let count = 0;
  let batches = 0;
  let last = 0;
  for await (const batch of s.stream(`select g as id, repeat('x', 400) || g as pad from generate_series(1, ${rowsWanted}) g`, { batchSize: 2000 })) {
    count += batch.length;
    last = batch[batch.length - 1].id as number;
    if (++batches % 10 === 0) {
      gc();
      peak = Math.max(peak, process.memoryUsage().heapUsed - base);
    }
  }
  t.equal(count, rowsWanted);
  t.equal(last, rowsWanted);
  // The whole result is ~90 MB of strings; a streamed read keeps about one batch alive.
  t.ok(peak < 25 * 1024 * 1024, `heap growth while streaming stayed bounded (${Math.round(peak / 1024 / 1024)} MB)`);
});

t.test('SQL that writes is refused by the read-only transaction', async (t) => {
  const s = open();
  t.teardown(() => s.close());
  // Passes the keyword check (WITH): only the database's read-only transaction stops it.
  const e = await expectCode(t, s.preview(`with d as (delete from ${schema}.people returning *) select * from d`, 10), 'read_only_violation');
  t.equal((e as { classification?: string }).classification, 'fatal');
  await expectCode(t, collect(s.stream(`with u as (update ${schema}.people set name = 'x' returning id) select * from u`)), 'read_only_violation');
  await expectCode(t, s.preview(`insert into ${schema}.people (id) values (99)`, 1), 'read_only_violation');
  // A second statement cannot escape the transaction with COMMIT.
  await expectCode(t, s.preview(`select 1; commit; delete from ${schema}.people`, 1), 'sql_error');
  const [{ n }] = await admin.unsafe(`select count(*)::int as n from ${schema}.people where name in ('Ada', 'Bob')`);
  t.equal(n, 2, 'nothing was changed');
});

t.test('statement timeout', async (t) => {
  const s = open({ statementTimeoutMs: 300 });
  t.teardown(() => s.close());
  // Stopped by the timeout, not by the end of the query: a query left to finish would return its row.
  const e = await expectCode(t, collect(s.stream('select pg_sleep(5)')), 'query_timeout');
  t.equal(e.classification, 'retryable');
  const p = open();
  t.teardown(() => p.close());
  await expectCode(t, p.preview('select pg_sleep(5)', 1, { timeoutMs: 300 }), 'query_timeout', 'preview uses its own timeout');
});

t.test('connection test errors have distinct codes', async (t) => {
  const role = uniqueName('bh_role');
  await admin.unsafe(`create role ${role} login password 'right-password'`);
  t.teardown(() => admin.unsafe(`drop owned by ${role}; drop role if exists ${role}`).catch(() => {}));
  const cases: [Record<string, unknown>, string][] = [
    [{ port: await closedPort() }, 'connection_refused'],
    [{ host: 'nonexistent.invalid' }, 'dns_not_found'],
    [{ user: uniqueName('bh_nobody') }, 'auth_failed'],
    [{ database: uniqueName('bh_missing') }, 'database_not_found'],
  ];
  for (const [overrides, code] of cases) {
    const s = open(overrides);
    const e = await expectCode(t, s.test(), code);
    t.equal(e.classification, 'fatal', `${code} is fatal`);
    t.ok(e.hint, `${code} has a hint`);
    await s.close();
  }
  // A user without privileges on the table.
  const s = new PostgresSource({ ...config, user: role }, { password: 'right-password' });
  await s.test();
  await expectCode(t, s.preview(`select * from ${schema}.people`, 1), 'permission_denied');
  await s.close();
});

t.test('a key scan read slowly leaves its connection usable for the fetches by key', async (t) => {
  // postgres.js pauses the socket when a COPY stream's buffer is full; if the last CopyData and
  // the CopyDone arrive together then, the stream ends with the socket paused and the next query
  // on the connection never answers (src/lib/copy-out.ts). A consumer that does other work
  // between chunks (the engine copies them into the control database) fills the buffer.
  const table = `${schema}.many`;
  await admin.unsafe(`create table ${table} as select i::int8 as id, repeat('x', 40) || i as name from generate_series(1, 20000) i`);
  await admin.unsafe(`alter table ${table} add primary key (id)`);
  const s = open();
  t.teardown(() => s.close());
  const sql = `select id, name from ${table}`;
  const columns = await s.columns(sql);
  for (let round = 0; round < 15; round++) {
    const session = (await s.fingerprints!(sql, { primaryKey: 'id', columns }))!;
    let lines = 0;
    for await (const chunk of session.keys('v:')) {
      lines += String(chunk).split('\n').length - 1;
      await new Promise((r) => setTimeout(r, 1));
    }
    t.equal(lines, 20000, `round ${round}: every key`);
    let timer: NodeJS.Timeout | undefined;
    const rows = await Promise.race([
      session.fetch(['7', '19999']),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`round ${round}: the fetch after the key scan did not answer in 20 s`)), 20_000);
      }),
    ]).finally(() => clearTimeout(timer));
    t.same(rows.map((r) => String(r.id)).sort(), ['19999', '7']);
    await session.close();
  }
});
