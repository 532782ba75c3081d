import t from 'tap';
import postgres from 'postgres';
import { startTestBackhaul, type TestBackhaul } from '../helpers/backhaul.ts';
import { runToEnd } from '../helpers/sync-setup.ts';
import { mysqlAdmin, uniqueName } from '../fakes/databases.ts';

// The engine writing into database tables: PostgreSQL (same server as the source, another schema)
// and MariaDB. A row that breaks a constraint is rejected with the database's message; the rest land.

const engine = { retryBaseMs: 5, retryMaxMs: 40, heartbeatMs: 200 };

async function sourceAndModel(t: { teardown(fn: () => unknown): void }, h: TestBackhaul) {
  const src = postgres(h.databaseUrl, { max: 2, onnotice: () => {} });
  t.teardown(() => src.end());
  await src`create schema src`;
  await src`create table src.accounts (id int primary key, domain text, plan text, seats int)`;
  await src`insert into src.accounts select i, 'acme' || i || '.com', case when i % 10 = 0 then null else 'pro' end, i from generate_series(1, 200) i`;
  const u = new URL(h.databaseUrl);
  const conn = await h.request('POST', '/v1/connections', {
    body: { slug: 'pg', name: 'PG', type: 'postgres', config: { host: u.hostname, port: Number(u.port), database: u.pathname.slice(1), user: decodeURIComponent(u.username), schema: 'dst' }, secrets: { password: decodeURIComponent(u.password) } },
  });
  const model = await h.request('POST', '/v1/models', { body: { slug: 'accounts', name: 'Accounts', connectionId: conn.body.id, sql: 'select id, domain, plan, seats from src.accounts', primaryKey: 'id' } });
  return { src, connId: conn.body.id as string, modelId: model.body.id as string };
}

async function makeSync(h: TestBackhaul, modelId: string, destinationId: string, mode: string) {
  const sync = await h.request('POST', '/v1/syncs', {
    body: { slug: `accounts-${mode}`, name: 'Accounts', modelId, destinationId, object: 'accounts', mode, matchKey: { sourceColumn: 'domain', destinationField: 'domain' }, delivery: { batchSize: 50 } },
  });
  if (sync.status !== 201) throw new Error(JSON.stringify(sync.body));
  await h.request('PUT', `/v1/syncs/${sync.body.id}/mappings`, {
    body: [
      { destinationField: 'domain', source: { column: 'domain' } },
      { destinationField: 'plan', source: { column: 'plan' } },
      { destinationField: 'seats', source: { column: 'seats' } },
    ],
  });
  return sync.body.id as string;
}

t.test('PostgreSQL table destination: mirror mode, constraint violations rejected per row', async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: true, engine } });
  const { src, connId, modelId } = await sourceAndModel(t, h);
  await src`create schema dst`;
  await src`create table dst.accounts (domain text primary key, plan text not null, seats int check (seats < 190))`;
  const syncId = await makeSync(h, modelId, connId, 'mirror');
  const fields = await h.request('GET', `/v1/connections/${connId}/objects/accounts/fields`);
  t.same(fields.body.data.find((f: any) => f.name === 'domain'), { name: 'domain', type: 'string', required: true, identifier: true });

  const run = await runToEnd(h, syncId);
  t.equal(run.status, 'partially_succeeded', JSON.stringify(run.error));
  // plan null for every 10th row (20 rows), seats >= 190 for rows 190..200 (11 rows, of which 190 and 200 already counted)
  t.equal(run.counts.rejected.insert, 29);
  t.equal(run.counts.succeeded.insert, 171);
  const [{ n }] = await src`select count(*)::int as n from dst.accounts`;
  t.equal(n, 171, 'the good rows of every batch were written');
  const rej = await h.request('GET', `/v1/runs/${run.id}/records?status=rejected&limit=200`);
  t.match(rej.body.data.find((r: any) => r.primaryKey === '10').error.message, /null value|not-null|violates/i, "the database's own message");

  await src`update src.accounts set plan = 'free' where plan is null`;
  await src`delete from src.accounts where id <= 5`;
  const second = await runToEnd(h, syncId);
  t.equal(second.counts.succeeded.insert, 18, 'the fixed rows are inserted');
  t.equal(second.counts.succeeded.delete, 5, 'rows that left the model are deleted');
  const [{ m }] = await src`select count(*)::int as m from dst.accounts`;
  t.equal(m, 171 + 18 - 5);
});

t.test('MariaDB table destination: upsert', async (t) => {
  const admin = await mysqlAdmin();
  if (!admin) {
    t.skip('MariaDB not reachable at 127.0.0.1:3306', () => {});
    return;
  }
  const db = uniqueName('bh_eng');
  await admin.query(`create database ${db}`);
  await admin.query(`create table ${db}.accounts (domain varchar(100) primary key, plan varchar(20) not null, seats int)`);
  t.teardown(async () => {
    await admin.query(`drop database ${db}`);
    await admin.end();
  });
  const h = await startTestBackhaul(t, { start: { worker: true, engine } });
  const { src, modelId } = await sourceAndModel(t, h);
  const dest = await h.request('POST', '/v1/connections', { body: { slug: 'maria', name: 'MariaDB', type: 'mysql', config: { host: '127.0.0.1', port: 3306, database: db, user: 'root' } } });
  t.equal(dest.status, 201);
  const syncId = await makeSync(h, modelId, dest.body.id, 'upsert');
  const run = await runToEnd(h, syncId);
  t.equal(run.counts.succeeded.insert, 180);
  t.equal(run.counts.rejected.insert, 20, 'NOT NULL plan rejected');
  await src`update src.accounts set seats = seats + 1000 where id = 1`;
  const second = await runToEnd(h, syncId);
  t.same(second.counts.succeeded, { insert: 0, update: 1, delete: 0 });
  const [rows] = await admin.query(`select seats from ${db}.accounts where domain = 'acme1.com'`);
  t.equal((rows as { seats: number }[])[0].seats, 1001);
});
