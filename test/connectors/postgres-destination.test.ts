import t from 'tap';
import { PostgresTableDestination } from '../../src/connectors/destinations/postgres.ts';
import { postgresType } from '../../src/connectors/postgres-type.ts';
import type { WriteRow } from '../../src/connectors/types.ts';
import { expectCode, pgAdmin, pgConfig, uniqueName } from '../fakes/databases.ts';

const admin = pgAdmin();
const schema = uniqueName();
const { config, password } = pgConfig({ schema });
const dest = new PostgresTableDestination(config, password ? { password } : {});
const rows = (...payloads: Record<string, unknown>[]): WriteRow[] => payloads.map((payload, i) => ({ primaryKey: String(i), payload }));
const table = async (name = 'contacts') => admin.unsafe(`select * from ${schema}.${name} order by id`);

t.before(async () => {
  await admin.unsafe(`create schema ${schema}`);
  await admin.unsafe(`create table ${schema}.contacts (
    id int primary key, email text not null unique, name varchar(20), age int check (age >= 0),
    balance numeric(12,2), active boolean default true, seen_at timestamptz, born date, attrs jsonb, tags text[],
    note text not null default '', created_at timestamptz not null default now())`);
  await admin.unsafe(`create table ${schema}."Odd ""Name""" ("Weird Col" text primary key)`);
});
t.beforeEach(async () => {
  await admin.unsafe(`truncate ${schema}.contacts`);
});
t.teardown(async () => {
  await dest.close();
  await admin.unsafe(`drop schema if exists ${schema} cascade`);
  await admin.end();
});

t.test('discovery: objects and fields', async (t) => {
  await dest.test();
  t.same((await dest.objects()).map((o) => o.name).sort(), ['Odd "Name"', 'contacts']);
  const fields = await dest.fields('contacts');
  const by = Object.fromEntries(fields.map((f) => [f.name, f]));
  t.same(by.id, { name: 'id', type: 'integer', required: true, identifier: true });
  t.same(by.email, { name: 'email', type: 'string', required: true, identifier: true });
  t.same(by.name, { name: 'name', type: 'string', required: false, identifier: false });
  t.same(by.note, { name: 'note', type: 'string', required: false, identifier: false }, 'NOT NULL with a default is not required');
  t.equal(by.balance.type, 'decimal');
  t.equal(by.seen_at.type, 'timestamp');
  t.equal(by.born.type, 'date');
  t.equal(by.attrs.type, 'json');
  t.equal(by.active.type, 'boolean');
  await expectCode(t, dest.fields('nope'), 'object_not_found');
  t.same(postgresType.openDestination!(config, {}, { denyPrivateNetworks: false }).capabilities().operations, ['insert', 'update', 'upsert', 'delete']);
  const bad = new PostgresTableDestination({ ...config, schema: uniqueName('bh_nope') }, {});
  await expectCode(t, bad.test(), 'schema_not_found');
  await bad.close();
});

t.test('insert writes typed values; an existing key is rejected as duplicate', async (t) => {
  const res = await dest.write({
    object: 'contacts',
    operation: 'insert',
    matchField: 'email',
    rows: rows(
      { id: 1, email: 'ada@x.io', name: 'Ada', age: 36, balance: '1234.50', active: false, seen_at: '2024-03-04T05:06:07.123Z', born: '1990-12-31', attrs: { plan: 'pro' }, tags: ['a', 'b"c'] },
      { id: 2, email: 'bob@x.io', name: 'Bob', age: '41', balance: 10, active: true, attrs: 'plain string', tags: null },
      { id: 4, email: 'dee@x.io', active: 'false' },
    ),
  });
  t.same(res.results, [{ status: 'succeeded' }, { status: 'succeeded' }, { status: 'succeeded' }]);
  const got = await table();
  t.equal(got.length, 3);
  t.match(got[0], { id: 1, email: 'ada@x.io', age: 36, balance: '1234.50', active: false, born: '1990-12-31', attrs: { plan: 'pro' }, tags: ['a', 'b"c'] });
  t.equal((got[0].seen_at as Date).toISOString(), '2024-03-04T05:06:07.123Z');
  t.match(got[1], { id: 2, age: 41, balance: '10.00', active: true, attrs: 'plain string', note: '' });
  t.match(got[2], { id: 4, active: false });

  const again = await dest.write({ object: 'contacts', operation: 'insert', matchField: 'email', rows: rows({ id: 3, email: 'cy@x.io' }, { id: 1, email: 'ada@x.io' }) });
  t.equal(again.results[0].status, 'succeeded');
  t.match(again.results[1], { status: 'rejected', code: 'duplicate', retryable: false, message: /duplicate key/ });
  t.equal((await table()).length, 4);
});

t.test('a constraint violation mid-batch rejects only the bad rows, with the database message', async (t) => {
  const payloads = Array.from({ length: 50 }, (_, i) => ({ id: i + 1, email: `u${i}@x.io`, age: i }) as Record<string, unknown>);
  payloads[17] = { id: 18, email: 'u17@x.io', age: -5 }; // CHECK
  payloads[30] = { id: 31, email: null as unknown as string, age: 3 }; // NOT NULL
  payloads[41] = { id: 42, email: 'u0@x.io', age: 3 }; // UNIQUE (same as row 0)
  payloads[44] = { id: 45, email: 'u44@x.io', age: 'forty' as unknown as number }; // bad value
  payloads[47] = { id: 48, email: 'u47@x.io', name: 'x'.repeat(30) }; // too long for varchar(20)
  const res = await dest.write({ object: 'contacts', operation: 'insert', matchField: 'email', rows: rows(...payloads) });
  t.equal(res.results.length, 50);
  const rejected = res.results.map((r, i) => [i, r] as const).filter(([, r]) => r.status === 'rejected');
  t.same(rejected.map(([i]) => i), [17, 30, 41, 44, 47]);
  t.match(res.results[17], { code: 'check_violation', message: /violates check constraint/ });
  t.match(res.results[30], { code: 'not_null_violation', message: /null value in column "email"/ });
  t.match(res.results[41], { code: 'duplicate', message: /unique constraint/ });
  t.match(res.results[44], { code: 'invalid_value', message: /invalid input syntax for type integer: "forty"/ });
  t.match(res.results[47], { code: 'invalid_value', message: /too long/ });
  const got = await table();
  t.equal(got.length, 45, 'every good row written exactly once');
  t.same(got.map((r) => r.id), payloads.map((p) => p.id).filter((_, i) => ![17, 30, 41, 44, 47].includes(i)));
});

t.test('upsert inserts or updates by match field', async (t) => {
  await admin.unsafe(`insert into ${schema}.contacts (id, email, name, age) values (1, 'ada@x.io', 'Ada', 36)`);
  const res = await dest.write({
    object: 'contacts',
    operation: 'upsert',
    matchField: 'email',
    rows: rows({ id: 1, email: 'ada@x.io', name: 'Ada L.', age: 37 }, { id: 2, email: 'bob@x.io', name: 'Bob', age: 41 }, { id: 3, email: 'neg@x.io', age: -1 }),
  });
  t.same(res.results.slice(0, 2), [{ status: 'succeeded' }, { status: 'succeeded' }]);
  t.match(res.results[2], { status: 'rejected', code: 'check_violation' });
  t.match(await table(), [{ id: 1, name: 'Ada L.', age: 37 }, { id: 2, name: 'Bob', age: 41 }]);
  await expectCode(t, dest.write({ object: 'contacts', operation: 'upsert', matchField: 'name', rows: rows({ id: 9, email: 'z@x.io', name: 'Z' }) }), 'match_field_not_unique');
});

t.test('update changes matched rows; unmatched rows are not_found', async (t) => {
  await admin.unsafe(`insert into ${schema}.contacts (id, email, name, age) values (1, 'ada@x.io', 'Ada', 36), (2, 'bob@x.io', 'Bob', 41)`);
  const res = await dest.write({
    object: 'contacts',
    operation: 'update',
    matchField: 'email',
    rows: rows({ email: 'bob@x.io', age: 42 }, { email: 'ghost@x.io', age: 1 }, { email: 'ada@x.io', age: -3 }, { email: null, age: 5 }),
  });
  t.same(res.results[0], { status: 'succeeded' });
  t.match(res.results[1], { status: 'rejected', code: 'not_found', retryable: false });
  t.match(res.results[2], { status: 'rejected', code: 'check_violation' });
  t.match(res.results[3], { status: 'rejected', code: 'missing_match_value' });
  t.match(await table(), [{ id: 1, age: 36 }, { id: 2, age: 42 }]);
});

t.test('delete removes rows by match field', async (t) => {
  await admin.unsafe(`insert into ${schema}.contacts (id, email) values (1, 'a@x.io'), (2, 'b@x.io'), (3, 'c@x.io')`);
  const res = await dest.write({ object: 'contacts', operation: 'delete', matchField: 'id', rows: rows({ id: 1 }, { id: '3' }, { id: 99 }) });
  t.same(res.results.map((r) => r.status), ['succeeded', 'succeeded', 'succeeded'], 'deleting a missing row is a success');
  t.same((await table()).map((r) => r.id), [2]);
});

t.test('identifiers are quoted; unknown fields and tables are fatal', async (t) => {
  const res = await dest.write({ object: 'Odd "Name"', operation: 'upsert', matchField: 'Weird Col', rows: rows({ 'Weird Col': "x'); drop table contacts; --" }) });
  t.same(res.results, [{ status: 'succeeded' }]);
  t.same(await admin.unsafe(`select * from ${schema}."Odd ""Name"""`), [{ 'Weird Col': "x'); drop table contacts; --" }]);
  const e = await expectCode(t, dest.write({ object: 'contacts', operation: 'insert', matchField: 'id', rows: rows({ id: 1, email: 'a@x.io', nope: 1 }) }), 'field_not_found');
  t.equal(e.classification, 'fatal');
  await expectCode(t, dest.write({ object: 'missing', operation: 'insert', matchField: 'id', rows: rows({ id: 1 }) }), 'object_not_found');
});

t.test('a large batch is split under the bind-parameter limit', async (t) => {
  const payloads = Array.from({ length: 5000 }, (_, i) => ({ id: i, email: `bulk${i}@x.io`, name: 'n', age: 1, balance: '1.00', active: true, note: 'x' }));
  const res = await dest.write({ object: 'contacts', operation: 'upsert', matchField: 'id', rows: rows(...payloads) });
  t.equal(res.results.filter((r) => r.status === 'succeeded').length, 5000);
  const [{ n }] = await admin.unsafe(`select count(*)::int as n from ${schema}.contacts`);
  t.equal(n, 5000);
});
