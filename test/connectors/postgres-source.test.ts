import t from 'tap';
import fc from 'fast-check';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { PostgresSource } from '../../src/connectors/sources/postgres.ts';
import { FINGERPRINT_COLUMN } from '../../src/connectors/types.ts';
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

t.test('fetches by key during the key scan read its snapshot, on a second connection or after the scan', async (t) => {
  const table = `${schema}.during`;
  await admin.unsafe(`create table ${table} as select i::int8 as id, repeat('x', 40) || i as name from generate_series(1, 20000) i`);
  await admin.unsafe(`alter table ${table} add primary key (id)`);
  // Roles that may hold two connections, and one: the second connection of the latter is
  // refused ("too many connections for role"), so its fetches wait for the scan to end on the first.
  const roles = [`${schema}_two`, `${schema}_one`];
  for (const [i, role] of roles.entries()) {
    await admin.unsafe(`create role ${role} login connection limit ${2 - i}`);
    await admin.unsafe(`grant usage on schema ${schema} to ${role}`);
    await admin.unsafe(`grant select on ${table} to ${role}`);
  }
  t.teardown(async () => {
    for (const role of roles) {
      await admin.unsafe(`drop owned by ${role}`);
      await admin.unsafe(`drop role ${role}`);
    }
  });
  const backends = async (role: string) => (await admin<{ n: number }[]>`select count(*)::int as n from pg_stat_activity where usename = ${role}`)[0].n;
  const sql = `select id, name from ${table}`;
  const columns = await open().columns(sql);
  const cases = [
    ['two connections', roles[0], true],
    ['one connection', roles[1], false],
  ] as const;
  for (const [how, role, concurrent] of cases) {
    const s = open({ user: role });
    t.teardown(() => s.close());
    await admin.unsafe(`update ${table} set name = 'before' where id = 7`);
    await admin.unsafe(`delete from ${table} where id = 20001`);
    const session = (await s.fingerprints!(sql, { primaryKey: 'id', columns }))!;
    t.ok(session.fetchesDuringScan, `${how}: the snapshot was exported`);
    // Changed after the session's snapshot: neither the scan nor the fetches may see it.
    await admin.unsafe(`update ${table} set name = 'after' where id = 7`);
    await admin.unsafe(`insert into ${table} values (20001, 'new')`);
    const fps = new Map<string, string>();
    let lines = 0;
    let scanOver = false;
    let fetchedDuringScan: boolean | undefined;
    let fetched: Promise<Record<string, unknown>[]> | undefined;
    for await (const chunk of session.keys('v:')) {
      for (const line of String(chunk).split('\n')) {
        if (!line) continue;
        lines++;
        const [pk, fp] = line.split('\t');
        if (pk === '7' || pk === '19999') fps.set(pk, fp);
      }
      if (!fetched) {
        t.equal(await backends(role), 1, `${how}: no second connection before a fetch`);
        fetched = session.fetch(['7', '19999', '20001']);
        fetched.then(() => (fetchedDuringScan ??= !scanOver)).catch(() => {});
        // Two connections: the fetch answers while the scan is paused mid-stream.
        if (concurrent) {
          await fetched;
          t.equal(await backends(role), 2, `${how}: the fetch opened a second connection`);
        }
      }
    }
    scanOver = true;
    const rows = await fetched!;
    t.equal(lines, 20000, `${how}: the scan read its snapshot (the inserted row is not in it)`);
    t.equal(fetchedDuringScan, concurrent, concurrent ? `${how}: the fetch answered during the scan` : `${how}: the fetch waited for the scan's end`);
    t.same(rows.map((r) => [String(r.id), r.name]).sort(), [['19999', 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx19999'], ['7', 'before']], `${how}: the fetch read the scan's snapshot`);
    for (const r of rows) t.equal(`v:${r[FINGERPRINT_COLUMN]}`, fps.get(String(r.id)), `${how}: row ${r.id} has the fingerprint the scan gave`);
    t.same((await session.fetch(['20000'])).map((r) => String(r.id)), ['20000'], `${how}: fetches go on after the scan`);
    await session.close();
  }
});

t.test('property: the fingerprint changes exactly when a value of the row does (types, NULLs, case under a nondeterministic collation, values moved between columns)', async (t) => {
  // Each case is a row in table one and a row of the same key in table two: a copy of the first
  // with some columns set to other values (possibly the same) and, sometimes, the values of its
  // two plain text columns exchanged. The two fingerprints must be equal exactly when the two
  // rows' text forms are.
  await admin.unsafe(`create collation if not exists ${schema}.ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)`);
  const tables = [`${schema}.fp_one`, `${schema}.fp_two`];
  for (const table of tables) {
    await admin.unsafe(`create table ${table} (id int8 primary key, a text, b text collate ${schema}.ci, n numeric, ts timestamptz, flag boolean, j jsonb, arr text[], f float8, c text)`);
  }
  const s = open();
  t.teardown(() => s.close());
  const model = (table: string) => `select id, a, b, n, ts, flag, j, arr, f, c from ${table}`;
  const columns = await s.columns(model(tables[0]));
  // Mostly words that differ by case only (one column's collation calls them equal).
  const words = fc.oneof(fc.constantFrom('x', 'X', 'abc', 'ABC', 'Abc'), fc.constantFrom('', 'a\tb', 'é', 'e\u0301', 'null'));
  const value = {
    a: fc.option(words),
    b: fc.option(words),
    n: fc.option(fc.constantFrom('1.5', '1.50', '0', '-0.0', '12345678901234567890.1', '1e3')),
    ts: fc.option(fc.constantFrom('2024-01-01 00:00:00+00', '2024-01-01 00:00:00.000001+00', '2024-01-01 01:00:00+01')),
    flag: fc.option(fc.boolean()),
    j: fc.option(fc.constantFrom('{"a":1}', '{"a":1.0}', '{"a":"1"}', '[]', 'null')),
    arr: fc.option(fc.constantFrom('{}', '{x}', '{X}', '{x,y}', '{NULL}')),
    f: fc.option(fc.constantFrom(0, -0, 1.5, 0.1 + 0.2, 0.3)),
    c: fc.option(words),
  };
  type Row = Record<string, unknown>;
  // At most two columns changed: a change hidden by another is then rare enough to be found.
  const change = fc
    .tuple(fc.subarray(Object.keys(value), { maxLength: 2 }), fc.record(value) as fc.Arbitrary<Row>)
    .map(([keys, other]) => Object.fromEntries(keys.map((k) => [k, other[k]])) as Row);
  const cases = fc.array(fc.tuple(fc.record(value) as fc.Arbitrary<Row>, change, fc.boolean()), { minLength: 1, maxLength: 60, size: 'medium' });
  const fingerprints = async (table: string) => {
    const session = (await s.fingerprints!(model(table), { primaryKey: 'id', columns }))!;
    const fp = new Map<string, string>();
    for await (const chunk of session.keys('')) {
      for (const line of String(chunk).split('\n')) if (line) fp.set(line.split('\t')[0], line.split('\t')[1]);
    }
    await session.close();
    return fp;
  };
  // Text forms as PostgreSQL writes them (b by its bytes: its collation calls 'x' and 'X' equal).
  const texts = async (table: string) =>
    new Map((await admin.unsafe<{ id: string; t: string }[]>(`select id::text as id, (a, b::text collate "C", n::text, ts, flag, j::text, arr::text, f::text, c)::text as t from ${table}`)).map((r) => [r.id, r.t]));
  let differed = 0;
  await fc.assert(
    fc.asyncProperty(cases, async (list) => {
      const one = list.map(([first], id) => ({ id, ...first }));
      const two = list.map(([first, change, swap], id) => {
        const r: Row = { id, ...first, ...change };
        return swap ? { ...r, a: r.c, c: r.a } : r;
      });
      for (const [table, rows] of [[tables[0], one], [tables[1], two]] as const) {
        await admin.unsafe(`truncate ${table}`);
        await admin`insert into ${admin(table)} ${admin(rows, 'id', 'a', 'b', 'n', 'ts', 'flag', 'j', 'arr', 'f', 'c')}`;
      }
      const [fp1, fp2, text1, text2] = await Promise.all([fingerprints(tables[0]), fingerprints(tables[1]), texts(tables[0]), texts(tables[1])]);
      for (const id of text1.keys()) {
        const same = text1.get(id) === text2.get(id);
        if (!same) differed++;
        if (same !== (fp1.get(id) === fp2.get(id))) throw new Error(`row ${id}: ${text1.get(id)} and ${text2.get(id)} have fingerprints ${fp1.get(id)} and ${fp2.get(id)}`);
      }
    }),
    {
      numRuns: 60,
      // The known hazards, always tried: each a row and its one change.
      examples: [
        [
          (
            [
              [{ b: 'x' }, { b: 'X' }], // a case-insensitive collation would hash them alike
              [{ a: 'x', c: 'y' }, { a: 'y', c: 'x' }], // values moved between columns
              [{ a: null, c: '' }, { a: '', c: null }],
              [{ a: null }, { a: '' }],
              [{ n: '1.5' }, { n: '1.50' }], // equal for numeric's own hash
              [{ j: '{"a":1}' }, { j: '{"a":1.0}' }],
              [{ f: 0 }, { f: -0 }],
              [{ ts: '2024-01-01 00:00:00+00' }, { ts: '2024-01-01 01:00:00+01' }], // the same instant
              [{ arr: '{x}' }, { arr: '{X}' }],
            ] as Row[][]
          ).map(([first, second]) => [{ ...Object.fromEntries(Object.keys(value).map((k) => [k, null])), ...first }, second, false] as [Row, Row, boolean]),
        ],
      ],
    },
  );
  t.ok(differed > 0, `rows that differ were compared (${differed})`);
});
