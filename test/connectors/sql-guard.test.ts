import t, { type Test } from 'tap';
import postgres from 'postgres';
import { prepareModelSql } from '../../src/connectors/sources/read-only.ts';
import { PostgresSource } from '../../src/connectors/sources/postgres.ts';
import { MysqlSource } from '../../src/connectors/sources/mysql.ts';
import type { SourceConnector } from '../../src/connectors/types.ts';
import { collect, expectCode, mysqlAdmin, mysqlConfig, pgAdmin, pgConfig, uniqueName } from '../fakes/databases.ts';

// Issue 13 item 2: model SQL cannot write, reach server files, or escape the read-only
// transaction. Each attack goes through the real source connector (preview and stream) against
// the real MariaDB and PostgreSQL, and the victim table is checked afterwards.

async function attack(t: Test, s: SourceConnector, sql: string, code: string) {
  await expectCode(t, s.preview(sql, 10), code, `preview refuses: ${sql.replace(/\s+/g, ' ').slice(0, 90)}`);
  await expectCode(t, collect(s.stream(sql)), code, `stream refuses: ${sql.replace(/\s+/g, ' ').slice(0, 90)}`);
}

t.test('the guard reads SQL the way each server does', async (t) => {
  const mysqlRefused = [
    '/*!CREATE OR REPLACE TABLE victims (x INT) */ SELECT 1 AS id',
    '/*!50000 DROP TABLE victims */ SELECT 1',
    '/*M!100000 DROP TABLE victims */ SELECT 1',
    '/*m!100000 DROP TABLE victims */ SELECT 1',
    'SELECT 1 AS id /*! , (SELECT 1) */',
    'SELECT 1 --/*! DROP TABLE victims */', // "--" without a space is not a comment in MySQL
    'SELECT 1 # harmless\n/*! DROP TABLE victims */',
    "SELECT * FROM victims INTO OUTFILE '/tmp/x'",
    "SELECT * FROM victims INTO  DUMPFILE '/tmp/x'",
    "SELECT * FROM victims into/**/outfile '/tmp/x'",
    "SELECT LOAD_FILE('/etc/passwd') AS f",
    "SELECT load_file /* spaced */ ('/etc/passwd')",
    "SELECT 'a\\\\', LOAD_FILE('/etc/passwd') -- '", // read with and without backslash escapes
    "SELECT 'a\\', LOAD_FILE('/etc/passwd') -- '",
    'CREATE TABLE sneaky (x INT)',
  ];
  for (const q of mysqlRefused) t.throws(() => prepareModelSql(q, 'mysql'), { code: /^(forbidden_sql|read_only_violation)$/ }, `mysql refuses ${JSON.stringify(q)}`);
  const mysqlAllowed = [
    "SELECT 'into outfile' AS note, '/*! not code */' AS s, `load_file` FROM t",
    'SELECT 1 -- /*! a comment, not code */',
    'SELECT 1 /* plain comment */',
    'SELECT /*+ MAX_EXECUTION_TIME(1000) */ 1',
  ];
  for (const q of mysqlAllowed) t.doesNotThrow(() => prepareModelSql(q, 'mysql'), `mysql allows ${JSON.stringify(q)}`);

  const pgRefused = [
    "select dblink_exec('dbname=x', 'delete from victims')",
    "select public.dblink_exec('dbname=x', 'delete from victims')",
    'select "dblink_exec"(\'dbname=x\', \'delete from victims\')',
    "select U&\"dblink\\005fexec\"('dbname=x', 'delete from victims')",
    "select U&\"dblink!005fexec\" UESCAPE '!' ('dbname=x', 'delete from victims')",
    "select * from dblink('dbname=x', 'delete from victims returning 1') as t(a int)",
    "select dblink_exec /* c */ ('dbname=x', 'delete from victims')",
    "select $$x$$, pg_read_file('/etc/passwd')",
    "select pg_catalog.pg_read_file('/etc/passwd')",
    "select pg_read_binary_file('/etc/passwd')",
    "select * from pg_ls_dir('.')",
    "select lo_import('/etc/passwd')",
    "select lo_export(1, '/tmp/x')",
    "select set_config('default_transaction_read_only', 'off', false)",
    "select set_config('search_path', 'x', 1 = 1)",
    'select pg_terminate_backend(123)',
    "select 'a\\', pg_read_file('/etc/passwd') -- '", // a backslash does not escape: the call is code
    "copy (select 1) to program 'touch /tmp/x'",
  ];
  for (const q of pgRefused) t.throws(() => prepareModelSql(q, 'postgres'), { code: /^(forbidden_sql|read_only_violation)$/ }, `postgres refuses ${JSON.stringify(q)}`);
  const pgAllowed = [
    "select set_config('search_path', 'public', true)",
    "select 'dblink_exec(' as s, $tag$ pg_read_file('x') $tag$ as d",
    "select 1 /* nested /* dblink_exec('x', 'y') */ still comment */",
    'select dblink_log.id from dblink_log',
    "select e'it\\'s' as s",
  ];
  for (const q of pgAllowed) t.doesNotThrow(() => prepareModelSql(q, 'postgres'), `postgres allows ${JSON.stringify(q)}`);
});

// ---------------------------------------------------------------- MariaDB
const my = await mysqlAdmin();
if (!my) {
  t.skip('MariaDB not reachable at 127.0.0.1:3306', () => {});
} else {
  const db = uniqueName();
  const config = mysqlConfig({ database: db });
  t.before(async () => {
    await my.query(`CREATE DATABASE ${db}`);
    await my.query(`CREATE TABLE ${db}.victims (id INT PRIMARY KEY, name VARCHAR(20))`);
    await my.query(`INSERT INTO ${db}.victims VALUES (1, 'ada'), (2, 'bob')`);
  });
  t.teardown(async () => {
    await my.query(`DROP DATABASE IF EXISTS ${db}`);
    await my.end();
  });
  const state = async () => {
    const [[create]] = (await my.query(`SHOW CREATE TABLE ${db}.victims`)) as unknown as [Record<string, string>[]];
    const [rows] = await my.query(`SELECT id, name FROM ${db}.victims ORDER BY id`);
    const [tables] = await my.query(`SHOW TABLES FROM ${db}`);
    return { create: create['Create Table'], rows, tables };
  };

  t.test('mariadb: executable comments, files and DDL are refused; the table is unchanged', async (t) => {
    const s = new MysqlSource(config, {});
    t.teardown(() => s.close());
    const before = await state();
    await attack(t, s, '/*!CREATE OR REPLACE TABLE victims (x INT) */ SELECT 1 AS id', 'forbidden_sql');
    await attack(t, s, '/*M!100000 DROP TABLE victims */ SELECT 1 AS id', 'forbidden_sql');
    await attack(t, s, 'SELECT 1 AS id /*!50000 , (SELECT COUNT(*) FROM victims) */', 'forbidden_sql');
    await attack(t, s, 'SELECT 1 AS id --/*! , 2 AS two */', 'forbidden_sql');
    await attack(t, s, `SELECT * FROM victims INTO OUTFILE '/tmp/${db}.txt'`, 'forbidden_sql');
    await attack(t, s, `SELECT name FROM victims LIMIT 1 INTO DUMPFILE '/tmp/${db}.bin'`, 'forbidden_sql');
    await attack(t, s, "SELECT LOAD_FILE('/etc/passwd') AS f", 'forbidden_sql');
    await attack(t, s, "SELECT 'a\\\\', LOAD_FILE('/etc/passwd') AS f -- '", 'forbidden_sql');
    await attack(t, s, 'CREATE TABLE sneaky (x INT)', 'read_only_violation');
    t.same(await state(), before, 'victims is unchanged and no table was created');
  });

  t.test('mariadb: the session itself is read-only', async (t) => {
    const s = new MysqlSource(config, {});
    t.teardown(() => s.close());
    t.same((await s.preview('SELECT @@session.tx_read_only AS ro', 1)).rows, [{ ro: 1 }], 'preview runs in a read-only session');
    t.same((await collect(s.stream('SELECT @@session.tx_read_only AS ro'))).flat(), [{ ro: 1 }], 'stream runs in a read-only session');
  });

  t.test('mariadb: connection test warns about administrators and writers', async (t) => {
    const reader = uniqueName('bh_r');
    const writer = uniqueName('bh_w');
    for (const u of [reader, writer]) {
      await my.query(`CREATE USER '${u}'@'%' IDENTIFIED BY 'pw'`);
      await my.query(`CREATE USER '${u}'@'localhost' IDENTIFIED BY 'pw'`);
    }
    t.teardown(async () => {
      for (const u of [reader, writer]) {
        await my.query(`DROP USER IF EXISTS '${u}'@'%'`);
        await my.query(`DROP USER IF EXISTS '${u}'@'localhost'`);
      }
    });
    for (const host of ['%', 'localhost']) {
      await my.query(`GRANT SELECT ON ${db}.* TO '${reader}'@'${host}'`);
      await my.query(`GRANT SELECT, INSERT ON ${db}.victims TO '${writer}'@'${host}'`);
    }
    const root = new MysqlSource(config, {});
    const r = new MysqlSource({ ...config, user: reader }, { password: 'pw' });
    const w = new MysqlSource({ ...config, user: writer }, { password: 'pw' });
    t.teardown(async () => {
      await Promise.all([root.close(), r.close(), w.close()]);
    });
    t.same((await root.test())?.warnings?.map((x) => x.code), ['superuser']);
    t.same((await r.test())?.warnings ?? [], [], 'SELECT only: no warning');
    const ww = (await w.test())?.warnings ?? [];
    t.same(ww.map((x) => x.code), ['can_write']);
    t.ok(ww[0]?.hint && ww[0]?.message, 'a warning has a message and a hint');
  });
}

// ---------------------------------------------------------------- PostgreSQL
const admin = pgAdmin();
const pgDb = uniqueName('bh_guard');
const pg = pgConfig({ database: pgDb });
let inDb: postgres.Sql;
t.before(async () => {
  await admin.unsafe(`create database ${pgDb}`);
  inDb = postgres({ host: pg.config.host, port: pg.config.port, database: pgDb, username: pg.config.user, password: pg.password, max: 1, onnotice: () => {} });
  await inDb.unsafe('create extension dblink');
  await inDb.unsafe(`create table victims (id int primary key, name text); insert into victims values (1, 'ada'), (2, 'bob')`);
});
t.teardown(async () => {
  await inDb?.end();
  await admin.unsafe(`drop database if exists ${pgDb} with (force)`);
  await admin.end();
});

t.test('postgres: what a read-only transaction cannot stop is refused; the table is unchanged', async (t) => {
  const s = new PostgresSource(pg.config, pg.password ? { password: pg.password } : {});
  t.teardown(() => s.close());
  const before = await inDb.unsafe('select id, name from victims order by id');
  const conninfo = `dbname=${pgDb} host=${pg.config.host} port=${pg.config.port} user=${pg.config.user}${pg.password ? ` password=${pg.password}` : ''}`;
  await attack(t, s, `select dblink_exec('${conninfo}', 'delete from victims') as r`, 'forbidden_sql');
  await attack(t, s, `select * from public."dblink_exec"('${conninfo}', 'delete from victims') as r`, 'forbidden_sql');
  await attack(t, s, `select * from dblink('${conninfo}', 'delete from victims returning id') as t(id int)`, 'forbidden_sql');
  await attack(t, s, `select U&"dblink\\005fexec"('${conninfo}', 'drop table victims') as r`, 'forbidden_sql');
  await attack(t, s, "select set_config('default_transaction_read_only', 'off', false) as r", 'forbidden_sql');
  await attack(t, s, "select pg_read_file('/etc/passwd') as f", 'forbidden_sql');
  await attack(t, s, "select lo_export(0, '/tmp/bh_guard') as r", 'forbidden_sql');
  await attack(t, s, "select * from pg_ls_dir('.') as f", 'forbidden_sql');
  await attack(t, s, "copy (select 1) to program 'true'", 'read_only_violation');
  await attack(t, s, "select 1 as x; copy (select 1) to program 'true'", 'sql_error');
  t.same(await inDb.unsafe('select id, name from victims order by id'), before, 'victims is unchanged');
  t.equal((await inDb.unsafe(`select count(*)::int as n from pg_tables where tablename = 'victims'`))[0].n, 1, 'victims still exists');
  // A transaction-local setting is fine.
  t.same((await s.preview("select set_config('search_path', 'public', true) as sp", 1)).rows, [{ sp: 'public' }]);
});

t.test('postgres: the session itself is read-only', async (t) => {
  const s = new PostgresSource(pg.config, pg.password ? { password: pg.password } : {});
  t.teardown(() => s.close());
  const sql = "select current_setting('default_transaction_read_only') as d, current_setting('transaction_read_only') as tx";
  t.same((await s.preview(sql, 1)).rows, [{ d: 'on', tx: 'on' }]);
  t.same((await collect(s.stream(sql))).flat(), [{ d: 'on', tx: 'on' }]);
});

t.test('postgres: connection test warns about superusers and writers', async (t) => {
  const reader = uniqueName('bh_r');
  const writer = uniqueName('bh_w');
  await inDb.unsafe(`create role ${reader} login password 'pw'; grant select on victims to ${reader}`);
  await inDb.unsafe(`create role ${writer} login password 'pw'; grant select, insert on victims to ${writer}`);
  t.teardown(async () => {
    await inDb.unsafe(`drop owned by ${reader}, ${writer}; drop role if exists ${reader}; drop role if exists ${writer}`).catch(() => {});
  });
  const sup = new PostgresSource(pg.config, pg.password ? { password: pg.password } : {});
  const r = new PostgresSource({ ...pg.config, user: reader }, { password: 'pw' });
  const w = new PostgresSource({ ...pg.config, user: writer }, { password: 'pw' });
  t.teardown(async () => {
    await Promise.all([sup.close(), r.close(), w.close()]);
  });
  const ws = (await sup.test())?.warnings ?? [];
  t.same(ws.map((x) => x.code), ['superuser']);
  t.ok(ws[0]?.hint && ws[0]?.message, 'a warning has a message and a hint');
  t.same((await r.test())?.warnings ?? [], [], 'SELECT only: no warning');
  t.same(((await w.test())?.warnings ?? []).map((x) => x.code), ['can_write']);
});

