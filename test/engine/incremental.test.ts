import pino from 'pino';
import t, { type Test } from 'tap';
import type { FingerprintSession, SourceConnector } from '../../src/connectors/types.ts';
import { systemActor } from '../../src/domain/context.ts';
import { RunExecutor } from '../../src/engine/executor.ts';
import type { QueryStats } from '../../src/engine/query.ts';
import { startFakeCrm } from '../fakes/crm.ts';
import { mysqlAdmin, uniqueName } from '../fakes/databases.ts';
import { startTestBackhaul, type TestBackhaul } from '../helpers/backhaul.ts';
import { runToEnd, setupSync } from '../helpers/sync-setup.ts';
import { startTcpProxy } from '../helpers/tcp-proxy.ts';

// Issue 17 item 1: an incremental run reads every row's (primary key, fingerprint) from the
// source and only the new and changed rows in full. Proven three ways: the run's own report of
// what it read (the `queried` hook and the backhaul_source_rows_read_total metric), the bytes the
// source sent through a TCP proxy, and what the destination received.

const engine = { retryBaseMs: 5, retryMaxMs: 50, heartbeatMs: 200 };

/** backhaul_source_rows_read_total of a sync, by `read` (key | row). */
async function rowsRead(h: TestBackhaul, syncId: string): Promise<{ key: number; row: number }> {
  const r = await h.request('GET', '/metrics');
  const out = { key: 0, row: 0 };
  for (const line of String(r.body).split('\n')) {
    const m = /^backhaul_source_rows_read_total\{(.*)\} (\d+)/.exec(line);
    if (m && m[1].includes(`sync="${syncId}"`)) out[/read="key"/.test(m[1]) ? 'key' : 'row'] += Number(m[2]);
  }
  return out;
}

/** backhaul_incremental_comparisons_total of a sync, by `table` (kept | loaded | sql). */
async function comparisons(h: TestBackhaul, syncId: string): Promise<Record<string, number>> {
  const r = await h.request('GET', '/metrics');
  const out: Record<string, number> = {};
  for (const line of String(r.body).split('\n')) {
    const m = /^backhaul_incremental_comparisons_total\{(.*)\} (\d+)/.exec(line);
    if (m && m[1].includes(`sync="${syncId}"`)) out[/table="(\w+)"/.exec(m[1])![1]] = Number(m[2]);
  }
  return out;
}

/** A scratch MariaDB database (dropped at teardown), or undefined (the test skipped) when MariaDB is not reachable. */
async function mariaDatabase(t: Test, prefix: string): Promise<{ admin: NonNullable<Awaited<ReturnType<typeof mysqlAdmin>>>; db: string } | undefined> {
  const admin = await mysqlAdmin();
  if (!admin) {
    t.skip('MariaDB not reachable at 127.0.0.1:3306', () => {});
    return undefined;
  }
  const db = uniqueName(prefix);
  await admin.query(`CREATE DATABASE ${db}`);
  t.teardown(async () => {
    await admin.query(`DROP DATABASE IF EXISTS ${db}`);
    await admin.end();
  });
  return { admin, db };
}

t.test('PostgreSQL: unchanged and 1%-changed runs read only changed rows in full; mappings and full resyncs re-evaluate every row', async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: true, engine } });
  const crm = await startFakeCrm();
  t.teardown(() => crm.close());
  const { src, syncId } = await setupSync(t, h, crm.url, { rows: 1000 });
  // A wide column the mappings do not read: the full rows are what the wire would carry.
  await src`alter table src.people add column bio text not null default repeat('x', 400)`;
  // The source is read through a proxy that counts what it sends.
  const u = new URL(h.databaseUrl);
  const proxy = await startTcpProxy({ host: u.hostname, port: Number(u.port) });
  t.teardown(() => proxy.close());
  const conn = await h.request('PATCH', '/v1/connections/people-db', {
    body: { config: { host: proxy.host, port: proxy.port, database: u.pathname.slice(1), user: decodeURIComponent(u.username) }, secrets: { password: decodeURIComponent(u.password) } },
  });
  t.equal(conn.status, 200, JSON.stringify(conn.body));
  const model = await h.request('PATCH', '/v1/models/people', { body: { sql: 'select id, email, name, age, bio from src.people' } });
  t.equal(model.status, 200, JSON.stringify(model.body));

  let bytes = proxy.bytesDown;
  let read = await rowsRead(h, syncId);
  const step = async (body: Record<string, unknown> = {}) => {
    const r = await runToEnd(h, syncId, body);
    t.equal(r.status, 'succeeded', JSON.stringify(r.error));
    const now = await rowsRead(h, syncId);
    const out = { run: r, key: now.key - read.key, row: now.row - read.row, bytes: proxy.bytesDown - bytes };
    read = now;
    bytes = proxy.bytesDown;
    return out;
  };

  const first = await step();
  t.same(first.run.counts.planned, { insert: 1000, update: 0, delete: 0 });
  t.same([first.key, first.row], [0, 1000], 'the first run reads every row in full (and fingerprints it)');
  t.ok(first.bytes > 1000 * 400, `the first run read the wide rows (${first.bytes} bytes)`);

  const before = crm.requests;
  const unchanged = await step();
  t.same(unchanged.run.counts.planned, { insert: 0, update: 0, delete: 0 });
  t.equal(unchanged.run.counts.queried, 1000, 'every row is still counted as queried');
  t.same([unchanged.key, unchanged.row], [1000, 0], 'an unchanged run reads keys and fingerprints only');
  t.ok(unchanged.bytes < first.bytes / 5, `an unchanged run reads a fraction of the bytes (${unchanged.bytes} vs ${first.bytes})`);
  t.equal(crm.requests, before, 'and sends nothing');
  t.same(await comparisons(h, syncId), { loaded: 1 }, "the first incremental run loaded the snapshot's table");

  await src`update src.people set name = name || ' (changed)' where id % 100 = 0`;
  crm.answeredBatches.length = 0;
  const changed = await step();
  t.same(changed.run.counts.planned, { insert: 0, update: 10, delete: 0 });
  t.same([changed.key, changed.row], [1000, 10], 'a 1%-changed run reads those 10 rows in full');
  t.same(crm.answeredBatches.flat().sort(), Array.from({ length: 10 }, (_, i) => `user${(i + 1) * 100}@example.com`).sort());
  t.equal(crm.contacts.get('user100@example.com')!.name, 'User 100 (changed)');
  t.same(await comparisons(h, syncId), { loaded: 1, kept: 1 }, 'the next one used the table the worker kept');

  // A column no mapping reads: the row is read, nothing is sent, and the next run does not read it again.
  await src`update src.people set bio = 'short' where id = 7`;
  await src`insert into src.people (id, email, name, age) values (1001, 'new@example.com', 'New', 1)`;
  const bio = await step();
  t.same(bio.run.counts.planned, { insert: 1, update: 0, delete: 0 });
  t.same([bio.key, bio.row], [1001, 2], 'the changed row and the new row are read');
  const after = await step();
  t.same([after.key, after.row], [1001, 0], 'the row whose payload did not change took its new fingerprint');

  // A mapping change re-evaluates every row.
  const maps = await h.request('PUT', `/v1/syncs/${syncId}/mappings`, {
    body: [
      { destinationField: 'email', source: { column: 'email' } },
      { destinationField: 'name', source: { template: '{{name}}!' } },
      { destinationField: 'age', source: { column: 'age' } },
    ],
  });
  t.equal(maps.status, 200, JSON.stringify(maps.body));
  const remapped = await step();
  t.same([remapped.key, remapped.row], [0, 1001], 'a mapping change reads every row in full');
  t.same(remapped.run.counts.planned, { insert: 0, update: 1001, delete: 0 });
  t.equal(crm.contacts.get('user3@example.com')!.name, 'User 3!');
  const settled = await step();
  t.same([settled.key, settled.row], [1001, 0], 'then runs are incremental again');

  // A model SQL change too.
  await h.request('PATCH', '/v1/models/people', { body: { sql: 'select id, email, name, age, bio from src.people where id > 0' } });
  const remodelled = await step();
  t.same([remodelled.key, remodelled.row], [0, 1001], 'a model SQL change reads every row in full');
  t.same(remodelled.run.counts.planned, { insert: 0, update: 0, delete: 0 }, 'payloads did not change: nothing sent');
  t.same([(await step()).row], [0], 'and the rows took fingerprints of the new version');

  // A full resync re-evaluates and resends every row.
  const full = await step({ fullResync: true });
  t.same([full.key, full.row], [0, 1001], 'a full resync reads every row in full');
  t.same(full.run.counts.planned, { insert: 0, update: 1001, delete: 0 });
  t.same([(await step()).row], [0]);
});

// The key scan is compared with the snapshot in memory (up to keyIndexMax records) or in SQL:
// the scenarios below run both ways (test/engine/fingerprint-index.property.test.ts proves
// that the two pick the same keys for any input).
// In memory with a one-byte scan queue, the scan's chunks wait for the index as soon as one
// arrives before it loaded (test/engine/scan-queue.property.test.ts covers every interleaving).
const COMPARISONS = [
  ['in memory', { keyIndexMax: undefined }],
  ['in memory, scan queued while the index loads', { keyIndexMax: undefined, scanQueueBytes: 1 }],
  ['in SQL', { keyIndexMax: 0 }],
] as const;

for (const [how, scanOpts] of COMPARISONS)
t.test(`mirror: deletes need no payload, and an unchanged row still claims its record (keys compared ${how})`, async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: true, engine: { ...engine, ...scanOpts } } });
  const crm = await startFakeCrm();
  t.teardown(() => crm.close());
  const { src, syncId } = await setupSync(t, h, crm.url, { rows: 100, mode: 'mirror' });
  t.equal((await runToEnd(h, syncId)).status, 'succeeded');
  let read = await rowsRead(h, syncId);
  const delta = async () => {
    const now = await rowsRead(h, syncId);
    const d = { key: now.key - read.key, row: now.row - read.row };
    read = now;
    return d;
  };

  await src`delete from src.people where id <= 5`;
  const del = await runToEnd(h, syncId);
  t.same(del.counts.planned, { insert: 0, update: 0, delete: 5 });
  t.same(del.counts.succeeded, { insert: 0, update: 0, delete: 5 });
  t.same(await delta(), { key: 95, row: 0 }, 'deleted rows are read from nobody');
  t.equal(crm.contacts.size, 95);

  // Row 50 takes row 10's email: row 10 is unchanged (not read in full) but still claims its
  // record, so both are invalid, and neither record is deleted.
  await src`update src.people set email = 'user10@example.com' where id = 50`;
  const clash = await runToEnd(h, syncId);
  t.equal(clash.status, 'partially_succeeded', JSON.stringify(clash.error));
  t.same(await delta(), { key: 95, row: 1 }, 'only row 50 was read in full');
  t.same(clash.counts.planned, { insert: 0, update: 0, delete: 0 }, 'row 50\'s old record is still claimed by an invalid row; nothing deleted');
  const inv = await h.request('GET', `/v1/runs/${clash.id}/records?status=invalid`);
  t.same(inv.body.data.map((r: { primaryKey: string; error: { code: string } }) => [r.primaryKey, r.error.code]).sort(), [
    ['10', 'duplicate_match_value'],
    ['50', 'duplicate_match_value'],
  ]);
  t.ok(crm.contacts.has('user10@example.com') && crm.contacts.has('user50@example.com'));

  // Resolved: row 50 is back as it was, so it matches its record again; row 10 never stopped.
  await src`update src.people set email = 'user50@example.com' where id = 50`;
  const ok = await runToEnd(h, syncId);
  t.equal(ok.status, 'succeeded', JSON.stringify(ok.error));
  t.same(ok.counts.planned, { insert: 0, update: 0, delete: 0 });
  t.same(await delta(), { key: 95, row: 0 }, 'nothing is read in full');
});

for (const [how, scanOpts] of COMPARISONS)
t.test(`a row that changed or left between the key scan and the fetch (keys compared ${how})`, async (t) => {
  const h = await startTestBackhaul(t, { start: { worker: false, engine } });
  const crm = await startFakeCrm();
  t.teardown(() => crm.close());
  const { src, syncId } = await setupSync(t, h, crm.url, { rows: 50, mode: 'mirror' });
  const [{ workspace_id: workspaceId }] = await h.bh.database.sql<{ workspace_id: string }[]>`select workspace_id from syncs where id = ${syncId}`;
  const actor = systemActor(workspaceId);
  const stats: QueryStats[] = [];
  const executor = new RunExecutor(h.bh.database, h.bh.services, { ...engine, ...scanOpts }, { queried: (_run, s) => stats.push(s) });
  const run = async () => {
    const { run } = await h.bh.services.runs.trigger(actor, syncId, {}, 'api');
    await executor.execute(run.id, { workerId: 'test', signal: new AbortController().signal, logger: pino({ level: 'silent' }) });
    return h.bh.services.runs.get(actor, run.id);
  };
  t.equal((await run()).status, 'succeeded');

  // A source without one snapshot for scan and fetch (PostgreSQL and MySQL have one; this wrapper
  // fetches from a second, later transaction): between the scan and the fetch, row 7 is deleted
  // and row 8 changes again.
  const connections = h.bh.services.connections;
  const open = connections.openSource.bind(connections);
  let between: (() => Promise<void>) | undefined;
  connections.openSource = (row) => {
    const real = open(row);
    const later = open(row);
    const wrapped: SourceConnector = {
      test: () => real.test(),
      columns: (sql) => real.columns(sql),
      preview: (sql, n, o) => real.preview(sql, n, o),
      stream: (sql, o) => real.stream(sql, o),
      fingerprintMethod: (c) => real.fingerprintMethod!(c),
      fingerprints: async (sql: string, o: Parameters<NonNullable<SourceConnector['fingerprints']>>[1]) => {
        const scan = await real.fingerprints!(sql, o);
        if (!scan) return undefined;
        let fetchFrom: FingerprintSession | undefined;
        const session: FingerprintSession = {
          method: scan.method,
          keys: (prefix, sig) => scan.keys(prefix, sig),
          fetch: async (keys, sig) => {
            if (!fetchFrom) {
              await between?.();
              fetchFrom = await later.fingerprints!(sql, o);
            }
            return fetchFrom!.fetch(keys, sig);
          },
          close: async () => {
            await scan.close();
            await fetchFrom?.close();
          },
        };
        return session;
      },
      close: async () => {
        await real.close();
        await later.close();
      },
    };
    return wrapped;
  };

  await src`update src.people set name = 'seven' where id = 7`;
  await src`update src.people set name = 'eight' where id = 8`;
  between = async () => {
    await src`delete from src.people where id = 7`;
    await src`update src.people set name = 'eight again' where id = 8`;
  };
  const r = await run();
  between = undefined;
  t.equal(r.status, 'succeeded', JSON.stringify(r.error));
  // recordsCopied: the records of the fetched rows were looked up as they were staged (the diff did not).
  t.match(stats.at(-1), { incremental: true, keysScanned: 50, rowsFetched: 1, vanished: 1, comparison: scanOpts.keyIndexMax === 0 ? 'sql' : 'memory', recordsCopied: true });
  t.same(r.counts.planned, { insert: 0, update: 1, delete: 0 }, 'row 7 is neither sent nor deleted in this run');
  t.equal(crm.contacts.get('user8@example.com')!.name, 'eight again', 'row 8 as fetched');
  t.ok(crm.contacts.has('user7@example.com'));

  const next = await run();
  t.equal(next.status, 'succeeded', JSON.stringify(next.error));
  t.same(next.counts.planned, { insert: 0, update: 0, delete: 1 }, 'the next run sees row 7 gone');
  t.match(stats.at(-1), { incremental: true, keysScanned: 49, rowsFetched: 0 }, 'row 8 was stored with the fingerprint of what was fetched');
  t.notOk(crm.contacts.has('user7@example.com'));
});

t.test('MariaDB source: incremental runs read only changed rows; a mapping change re-evaluates', async (t) => {
  const maria = await mariaDatabase(t, 'bh_incr');
  if (!maria) return;
  const { admin, db } = maria;
  await admin.query(`CREATE TABLE ${db}.people (id INT PRIMARY KEY, email VARCHAR(200), name VARCHAR(200), age INT, note TEXT)`);
  const values = Array.from({ length: 500 }, (_, i) => `(${i + 1}, 'user${i + 1}@example.com', 'User ${i + 1}', ${20 + (i % 50)}, ${i % 3 === 0 ? 'NULL' : `'n${i}'`})`);
  await admin.query(`INSERT INTO ${db}.people VALUES ${values.join(',')}`);

  const h = await startTestBackhaul(t, { start: { worker: true, engine } });
  const crm = await startFakeCrm();
  t.teardown(() => crm.close());
  const { syncId } = await setupSync(t, h, crm.url, { rows: 0 });
  const conn = await h.request('PUT', '/v1/connections/maria', { body: { name: 'MariaDB', type: 'mysql', config: { host: '127.0.0.1', port: 3306, database: db, user: 'root' } } });
  t.equal(conn.status < 300, true, JSON.stringify(conn.body));
  const model = await h.request('PATCH', '/v1/models/people', { body: { connectionId: conn.body.id, sql: `select id, email, name, age, note from people` } });
  t.equal(model.status, 200, JSON.stringify(model.body));

  let read = await rowsRead(h, syncId);
  const step = async () => {
    const r = await runToEnd(h, syncId);
    t.equal(r.status, 'succeeded', JSON.stringify(r.error));
    const now = await rowsRead(h, syncId);
    const d = { run: r, key: now.key - read.key, row: now.row - read.row };
    read = now;
    return d;
  };
  const first = await step();
  t.same([first.key, first.row, first.run.counts.planned.insert], [0, 500, 500]);
  const unchanged = await step();
  t.same([unchanged.key, unchanged.row], [500, 0], 'unchanged: keys only');
  t.same(unchanged.run.counts.planned, { insert: 0, update: 0, delete: 0 });

  // NULL to '' is a change the fingerprint sees (QUOTE tells them apart).
  await admin.query(`UPDATE ${db}.people SET name = CONCAT(name, ' (changed)') WHERE id % 100 = 0`);
  await admin.query(`UPDATE ${db}.people SET note = '' WHERE id = 1`);
  const changed = await step();
  t.same([changed.key, changed.row], [500, 6], 'the 5 changed rows and the NULL → empty note are read');
  t.same(changed.run.counts.planned, { insert: 0, update: 5, delete: 0 });
  t.equal(crm.contacts.get('user200@example.com')!.name, 'User 200 (changed)');

  const maps = await h.request('PUT', `/v1/syncs/${syncId}/mappings`, {
    body: [
      { destinationField: 'email', source: { column: 'email' } },
      { destinationField: 'name', source: { template: 'Dr {{name}}' } },
    ],
  });
  t.equal(maps.status, 200);
  const remapped = await step();
  t.same([remapped.key, remapped.row], [0, 500], 'a mapping change reads every row');
  t.same(remapped.run.counts.planned, { insert: 0, update: 500, delete: 0 });
  t.same([(await step()).row], [0]);
});

t.test('changed rows in several fetches by key (the next fetch sent before a batch is staged) are all read in full, on PostgreSQL and MariaDB', async (t) => {
  // 2,500 of 10,000 PostgreSQL rows and 1,500 of 3,000 MariaDB rows change: three and two
  // fetches of up to 1,000 keys, each sent while the one before it is mapped and staged.
  const h = await startTestBackhaul(t, { start: { worker: true, engine } });
  const crm = await startFakeCrm();
  t.teardown(() => crm.close());
  const { src, syncId } = await setupSync(t, h, crm.url, { rows: 10_000, delivery: { batchSize: 500 } });
  let read = await rowsRead(h, syncId);
  const step = async (id: string) => {
    const r = await runToEnd(h, id, {}, 120_000);
    t.equal(r.status, 'succeeded', JSON.stringify(r.error));
    const now = await rowsRead(h, id);
    const d = { run: r, key: now.key - read.key, row: now.row - read.row };
    read = now;
    return d;
  };
  t.same((await step(syncId)).row, 10_000, 'the first run reads every row');
  await src`update src.people set name = name || ' (changed)' where id % 4 = 0`;
  const changed = await step(syncId);
  t.same([changed.key, changed.row], [10_000, 2_500], 'every changed row and only those are read in full');
  t.same(changed.run.counts.planned, { insert: 0, update: 2_500, delete: 0 });
  const names = [...crm.contacts.values()].filter((c) => String(c.name).endsWith(' (changed)')).map((c) => c.email as string);
  t.equal(names.length, 2_500, 'the destination holds the 2,500 new names');
  t.ok(names.every((e) => Number(/^user(\d+)@/.exec(e)![1]) % 4 === 0), 'and only those');

  const maria = await mariaDatabase(t, 'bh_fetch');
  if (!maria) return;
  const { admin, db } = maria;
  await admin.query(`CREATE TABLE ${db}.people (id INT PRIMARY KEY, email VARCHAR(200), name VARCHAR(200), age INT)`);
  const values = Array.from({ length: 3_000 }, (_, i) => `(${i + 1}, 'maria${i + 1}@example.com', 'Maria ${i + 1}', ${20 + (i % 50)})`);
  await admin.query(`INSERT INTO ${db}.people VALUES ${values.join(',')}`);
  const conn = await h.request('PUT', '/v1/connections/maria', { body: { name: 'MariaDB', type: 'mysql', config: { host: '127.0.0.1', port: 3306, database: db, user: 'root' } } });
  t.ok(conn.status < 300, JSON.stringify(conn.body));
  const model = await h.request('PATCH', '/v1/models/people', { body: { connectionId: conn.body.id, sql: 'select id, email, name, age from people' } });
  t.equal(model.status, 200, JSON.stringify(model.body));
  t.same((await step(syncId)).row, 3_000, 'a new model: every row is read');
  await admin.query(`UPDATE ${db}.people SET name = CONCAT(name, ' (changed)') WHERE id % 2 = 0`);
  const mChanged = await step(syncId);
  t.same([mChanged.key, mChanged.row], [3_000, 1_500], 'every changed MariaDB row and only those are read in full');
  t.same(mChanged.run.counts.planned.update, 1_500);
  const mNames = [...crm.contacts.values()].filter((c) => String(c.email).startsWith('maria') && String(c.name).endsWith(' (changed)'));
  t.equal(mNames.length, 1_500, 'the destination holds the 1,500 new MariaDB names');
});
