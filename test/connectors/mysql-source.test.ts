import t from 'tap';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { Connection } from 'mysql2/promise';
import { MysqlSource } from '../../src/connectors/sources/mysql.ts';
import { mysqlType } from '../../src/connectors/mysql-type.ts';
import { closedPort, collect, expectCode, mysqlAdmin, mysqlConfig, uniqueName } from '../fakes/databases.ts';

v8.setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const admin = await mysqlAdmin();
if (!admin) {
  t.skip('MariaDB not reachable at 127.0.0.1:3306', () => {});
} else {
  run(admin);
}

function run(admin: Connection) {
  const db = uniqueName();
  const config = mysqlConfig({ database: db });
  const open = (overrides = {}, password?: string) => new MysqlSource({ ...config, ...overrides }, password ? { password } : {});

  t.before(async () => {
    await admin.query(`CREATE DATABASE ${db}`);
    await admin.query(`USE ${db}`);
    await admin.query(`CREATE TABLE people (
      id BIGINT PRIMARY KEY, big BIGINT, amount DECIMAL(30,10), seen_at TIMESTAMP(3) NULL, local_at DATETIME NULL,
      born DATE NULL, profile JSON NULL, active TINYINT(1), name VARCHAR(100), score DOUBLE NULL)`);
    await admin.query(`INSERT INTO people VALUES
      (1, 9007199254740993, 12345678901234567890.0123456789, '2024-03-04 03:06:07.123', '2024-01-02 03:04:05',
       '1990-12-31', '{"plan":"pro","seats":[1,2]}', 1, 'Ada', 1.5),
      (2, 42, 0.1, NULL, NULL, NULL, NULL, 0, 'Bob', NULL)`);
    await admin.query(`CREATE TABLE digits (d INT)`);
    await admin.query(`INSERT INTO digits VALUES (0),(1),(2),(3),(4),(5),(6),(7),(8),(9)`);
  });
  t.teardown(async () => {
    await admin.query(`DROP DATABASE IF EXISTS ${db}`);
    await admin.end();
  });

  t.test('the type attaches the source factory', async () => {
    const s = mysqlType.openSource!(config, {}, { denyPrivateNetworks: false });
    await s.test();
    await s.close();
  });

  t.test('columns maps native types without reading rows', async (t) => {
    const s = open();
    t.teardown(() => s.close());
    const cols = await s.columns('SELECT * FROM people');
    t.same(
      cols.map((c) => [c.name, c.type, c.nativeType]),
      [
        ['id', 'integer', 'bigint'], ['big', 'integer', 'bigint'], ['amount', 'decimal', 'decimal'],
        ['seen_at', 'timestamp', 'timestamp'], ['local_at', 'timestamp', 'datetime'], ['born', 'date', 'date'],
        ['profile', 'json', 'json'], ['active', 'boolean', 'tinyint(1)'], ['name', 'string', 'varchar'], ['score', 'decimal', 'double'],
      ],
    );
    // Executing this fails ("Subquery returns more than 1 row": people has two); preparing it does not.
    t.same((await s.columns('SELECT (SELECT id FROM people) AS z FROM people')).map((c) => c.name), ['z'], 'no rows were read');
    await expectCode(t, s.columns('SELECT nope FROM people'), 'sql_error');
  });

  t.test('preview returns exact values in the common representation', async (t) => {
    const s = open();
    t.teardown(() => s.close());
    const { columns, rows } = await s.preview('SELECT * FROM people ORDER BY id', 1);
    t.equal(columns.length, 10);
    t.equal(rows.length, 1, 'limit respected');
    t.same(rows[0], {
      id: 1,
      big: '9007199254740993',
      amount: '12345678901234567890.0123456789',
      seen_at: '2024-03-04T03:06:07.123Z',
      local_at: '2024-01-02T03:04:05Z',
      born: '1990-12-31',
      profile: { plan: 'pro', seats: [1, 2] },
      active: true,
      name: 'Ada',
      score: 1.5,
    });
    const all = await s.preview('SELECT id, active FROM people ORDER BY id', 10);
    t.same(all.rows, [{ id: 1, active: true }, { id: 2, active: false }]);
  });

  t.test('stream yields batches; early exits release or discard the connection', async (t) => {
    const s = open();
    t.teardown(() => s.close());
    const batches = await collect(s.stream('SELECT d FROM digits ORDER BY d', { batchSize: 4 }));
    t.same(batches.map((b) => b.length), [4, 4, 2]);
    t.same(batches.flat().map((r) => r.d), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    for (let i = 0; i < 5; i++) {
      for await (const b of s.stream('SELECT a.d FROM digits a, digits b, digits c', { batchSize: 10 })) {
        t.equal(b.length, 10);
        break;
      }
    }
    t.same((await s.preview('SELECT 1 AS one', 1)).rows, [{ one: 1 }], 'pool still usable');
  });

  t.test('a large result streams with bounded memory', async (t) => {
    const s = open();
    t.teardown(() => s.close());
    gc();
    const base = process.memoryUsage().heapUsed;
    let peak = 0;
    let count = 0;
    let batches = 0;
    const sql = `SELECT a.d + 10*b.d + 100*c.d + 1000*d.d + 10000*e.d + 100000*f.d AS id, REPEAT('x', 400) AS pad
                 FROM digits a, digits b, digits c, digits d, digits e, (SELECT 0 AS d UNION ALL SELECT 1) f`;
    for await (const batch of s.stream(sql, { batchSize: 2000 })) {
      count += batch.length;
      if (++batches % 10 === 0) {
        gc();
        peak = Math.max(peak, process.memoryUsage().heapUsed - base);
      }
    }
    t.equal(count, 200_000);
    t.ok(peak < 25 * 1024 * 1024, `heap growth while streaming stayed bounded (${Math.round(peak / 1024 / 1024)} MB)`);
  });

  t.test('SQL that writes is refused', async (t) => {
    const s = open();
    t.teardown(() => s.close());
    await expectCode(t, s.preview('INSERT INTO people (id) VALUES (99)', 1), 'read_only_violation');
    // DDL would commit implicitly in MySQL: refused before it reaches the server.
    await expectCode(t, collect(s.stream('CREATE TABLE sneaky (x INT)')), 'read_only_violation');
    await expectCode(t, s.preview('SELECT 1; DELETE FROM people', 1), 'sql_error');
    // A SELECT whose function writes: only the READ ONLY transaction stops it.
    await admin.query(`CREATE FUNCTION ${db}.bump() RETURNS INT MODIFIES SQL DATA BEGIN INSERT INTO ${db}.digits VALUES (42); RETURN 1; END`);
    await expectCode(t, s.preview('SELECT bump() AS x', 1), 'read_only_violation');
    const [rows] = await admin.query(`SELECT COUNT(*) AS n FROM ${db}.digits WHERE d = 42`);
    t.equal(Number((rows as { n: number }[])[0].n), 0, 'nothing was written');
    const [tables] = await admin.query(`SHOW TABLES FROM ${db} LIKE 'sneaky'`);
    t.equal((tables as unknown[]).length, 0, 'no table was created');
  });

  t.test('statement timeout', async (t) => {
    const s = open({ statementTimeoutMs: 300 });
    t.teardown(() => s.close());
    // Stopped by the timeout, not by the end of the query: a query left to finish would return its rows.
    const e = await expectCode(t, collect(s.stream('SELECT SLEEP(5) AS z FROM people')), 'query_timeout');
    t.equal(e.classification, 'retryable');
    const p = open();
    t.teardown(() => p.close());
    await expectCode(t, p.preview('SELECT SLEEP(5) AS z FROM people', 1, { timeoutMs: 300 }), 'query_timeout', 'preview uses its own timeout');
  });

  t.test('connection test errors have distinct codes', async (t) => {
    const user = uniqueName('bh_user');
    await admin.query(`CREATE USER '${user}'@'%' IDENTIFIED BY 'right-password'`);
    await admin.query(`CREATE USER '${user}'@'localhost' IDENTIFIED BY 'right-password'`);
    t.teardown(async () => {
      await admin.query(`DROP USER IF EXISTS '${user}'@'%'`);
      await admin.query(`DROP USER IF EXISTS '${user}'@'localhost'`);
    });
    const cases: [Record<string, unknown>, string, string?][] = [
      [{ port: await closedPort() }, 'connection_refused'],
      [{ host: 'nonexistent.invalid' }, 'dns_not_found'],
      [{ user }, 'auth_failed', 'wrong-password'],
      [{ database: uniqueName('bh_missing') }, 'database_not_found'],
      [{ user }, 'permission_denied', 'right-password'], // no grant on the database
    ];
    for (const [overrides, code, password] of cases) {
      const s = open(overrides, password);
      const e = await expectCode(t, s.test(), code);
      t.equal(e.classification, 'fatal', `${code} is fatal`);
      t.ok(e.hint, `${code} has a hint`);
      await s.close();
    }
  });
}
