import t from 'tap';
import type { Connection, RowDataPacket } from 'mysql2/promise';
import { MysqlTableDestination } from '../../src/connectors/destinations/mysql.ts';
import { mysqlType } from '../../src/connectors/mysql-type.ts';
import type { WriteRow } from '../../src/connectors/types.ts';
import { expectCode, mysqlAdmin, mysqlConfig, uniqueName } from '../fakes/databases.ts';

const admin = await mysqlAdmin();
if (!admin) t.skip('MariaDB not reachable at 127.0.0.1:3306', () => {});
else run(admin);

function run(admin: Connection) {
  const db = uniqueName();
  const config = mysqlConfig({ database: db });
  const dest = new MysqlTableDestination(config, {});
  const rows = (...payloads: Record<string, unknown>[]): WriteRow[] => payloads.map((payload, i) => ({ primaryKey: String(i), payload }));
  const table = async (name = 'contacts') => (await admin.query<RowDataPacket[]>(`SELECT * FROM ${db}.\`${name}\` ORDER BY id`))[0];

  t.before(async () => {
    await admin.query(`CREATE DATABASE ${db}`);
    await admin.query(`CREATE TABLE ${db}.contacts (
      id INT PRIMARY KEY, email VARCHAR(100) NOT NULL UNIQUE, name VARCHAR(20), age INT CHECK (age >= 0),
      balance DECIMAL(12,2), active TINYINT(1) DEFAULT 1, seen_at DATETIME(3) NULL, born DATE NULL, attrs JSON NULL,
      note VARCHAR(50) NOT NULL DEFAULT '', auto_note VARCHAR(60) AS (CONCAT('n:', note)) VIRTUAL)`);
  });
  t.beforeEach(async () => {
    await admin.query(`TRUNCATE ${db}.contacts`);
  });
  t.teardown(async () => {
    await dest.close();
    await admin.query(`DROP DATABASE IF EXISTS ${db}`);
    await admin.end();
  });

  t.test('discovery: objects and fields', async (t) => {
    await dest.test();
    t.same(await dest.objects(), [{ name: 'contacts' }]);
    const fields = await dest.fields('contacts');
    const by = Object.fromEntries(fields.map((f) => [f.name, f]));
    t.same(by.id, { name: 'id', type: 'integer', required: true, identifier: true });
    t.same(by.email, { name: 'email', type: 'string', required: true, identifier: true });
    t.same(by.note, { name: 'note', type: 'string', required: false, identifier: false });
    t.equal(by.active.type, 'boolean');
    t.equal(by.balance.type, 'decimal');
    t.equal(by.seen_at.type, 'timestamp');
    t.equal(by.born.type, 'date');
    t.equal(by.attrs.type, 'json');
    t.notOk(by.auto_note, 'generated columns are not writable fields');
    await expectCode(t, dest.fields('nope'), 'object_not_found');
    t.same(mysqlType.openDestination!(config, {}, { denyPrivateNetworks: false }).capabilities().modes, ['insert', 'update', 'upsert', 'mirror']);
  });

  t.test('insert writes typed values; an existing key is rejected as duplicate', async (t) => {
    const res = await dest.write({
      object: 'contacts',
      operation: 'insert',
      matchField: 'email',
      rows: rows(
        { id: 1, email: 'ada@x.io', name: 'Ada', age: 36, balance: '1234.50', active: false, seen_at: '2024-03-04T05:06:07.123Z', born: '1990-12-31', attrs: { plan: 'pro' } },
        { id: 2, email: 'bob@x.io', age: '41', active: true, seen_at: '2024-03-04T07:06:07+02:00', born: '2000-01-02T00:00:00Z' },
      ),
    });
    t.same(res.results, [{ status: 'succeeded' }, { status: 'succeeded' }]);
    const got = await table();
    t.match(got[0], { id: 1, email: 'ada@x.io', age: 36, balance: '1234.50', active: 0, born: '1990-12-31', seen_at: '2024-03-04 05:06:07.123' });
    t.same(typeof got[0].attrs === 'string' ? JSON.parse(got[0].attrs) : got[0].attrs, { plan: 'pro' });
    t.match(got[1], { id: 2, age: 41, active: 1, seen_at: '2024-03-04 05:06:07.000', born: '2000-01-02' });
    const again = await dest.write({ object: 'contacts', operation: 'insert', matchField: 'email', rows: rows({ id: 3, email: 'cy@x.io' }, { id: 1, email: 'ada@x.io' }) });
    t.equal(again.results[0].status, 'succeeded');
    t.match(again.results[1], { status: 'rejected', code: 'duplicate', message: /Duplicate entry/ });
    t.equal((await table()).length, 3);
  });

  t.test('a constraint violation mid-batch rejects only the bad rows, with the database message', async (t) => {
    const payloads = Array.from({ length: 50 }, (_, i) => ({ id: i + 1, email: `u${i}@x.io`, age: i }) as Record<string, unknown>);
    payloads[17] = { id: 18, email: 'u17@x.io', age: -5 }; // CHECK
    payloads[30] = { id: 31, email: null, age: 3 }; // NOT NULL
    payloads[41] = { id: 42, email: 'u0@x.io', age: 3 }; // UNIQUE
    payloads[44] = { id: 45, email: 'u44@x.io', age: 'forty' }; // bad value (strict mode)
    const res = await dest.write({ object: 'contacts', operation: 'insert', matchField: 'email', rows: rows(...payloads) });
    const rejected = res.results.map((r, i) => [i, r] as const).filter(([, r]) => r.status === 'rejected');
    t.same(rejected.map(([i]) => i), [17, 30, 41, 44]);
    t.match(res.results[17], { code: 'check_violation', message: /CONSTRAINT .* failed|Check constraint/i });
    t.match(res.results[30], { code: 'not_null_violation', message: /cannot be null/ });
    t.match(res.results[41], { code: 'duplicate', message: /Duplicate entry/ });
    t.match(res.results[44], { code: 'invalid_value', message: /Incorrect integer value/ });
    const got = await table();
    t.same(got.map((r) => r.id), payloads.map((p) => p.id).filter((_, i) => ![17, 30, 41, 44].includes(i)), 'every good row written exactly once');
  });

  t.test('upsert inserts or updates', async (t) => {
    await admin.query(`INSERT INTO ${db}.contacts (id, email, name, age) VALUES (1, 'ada@x.io', 'Ada', 36)`);
    const res = await dest.write({
      object: 'contacts',
      operation: 'upsert',
      matchField: 'email',
      rows: rows({ id: 1, email: 'ada@x.io', name: 'Ada L.', age: 37 }, { id: 2, email: 'bob@x.io', name: 'Bob', age: 41 }, { id: 3, email: 'neg@x.io', age: -1 }),
    });
    t.same(res.results.slice(0, 2), [{ status: 'succeeded' }, { status: 'succeeded' }]);
    t.match(res.results[2], { status: 'rejected', code: 'check_violation' });
    t.match(await table(), [{ id: 1, name: 'Ada L.', age: 37 }, { id: 2, name: 'Bob', age: 41 }]);
  });

  t.test('update changes matched rows; unmatched rows are not_found', async (t) => {
    await admin.query(`INSERT INTO ${db}.contacts (id, email, name, age) VALUES (1, 'ada@x.io', 'Ada', 36), (2, 'bob@x.io', 'Bob', 41)`);
    const res = await dest.write({
      object: 'contacts',
      operation: 'update',
      matchField: 'email',
      rows: rows({ email: 'bob@x.io', age: 42 }, { email: 'ghost@x.io', age: 1 }, { email: 'ada@x.io', age: -3 }, { email: 'ADA@x.io', name: 'Case' }),
    });
    t.same(res.results[0], { status: 'succeeded' });
    t.match(res.results[1], { status: 'rejected', code: 'not_found' });
    t.match(res.results[2], { status: 'rejected', code: 'check_violation' });
    t.same(res.results[3], { status: 'succeeded' }, 'matching follows the column collation');
    t.match(await table(), [{ id: 1, age: 36, name: 'Case' }, { id: 2, age: 42 }]);
  });

  t.test('delete removes rows by match field', async (t) => {
    await admin.query(`INSERT INTO ${db}.contacts (id, email) VALUES (1, 'a@x.io'), (2, 'b@x.io'), (3, 'c@x.io')`);
    const res = await dest.write({ object: 'contacts', operation: 'delete', matchField: 'id', rows: rows({ id: 1 }, { id: '3' }, { id: 99 }) });
    t.same(res.results.map((r) => r.status), ['succeeded', 'succeeded', 'succeeded']);
    t.same((await table()).map((r) => r.id), [2]);
  });

  t.test('unknown fields and tables are fatal', async (t) => {
    await expectCode(t, dest.write({ object: 'contacts', operation: 'insert', matchField: 'id', rows: rows({ id: 1, email: 'a@x.io', nope: 1 }) }), 'field_not_found');
    await expectCode(t, dest.write({ object: 'missing', operation: 'insert', matchField: 'id', rows: rows({ id: 1 }) }), 'object_not_found');
  });
}
