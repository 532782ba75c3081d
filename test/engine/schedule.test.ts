import t from 'tap';
import postgres from 'postgres';
import { realClock } from '../../src/engine/rate-limiter.ts';
import { nextFireTime } from '../../src/engine/scheduler.ts';
import { startTestBackhaul, type TestBackhaul } from '../helpers/backhaul.ts';
import { startFakeCrm } from '../fakes/crm.ts';
import { setupSync, waitForRun } from '../helpers/sync-setup.ts';

// A controllable clock: the scheduler plans from clock.now(), so tests move time instead of sleeping.
function fixedClock(iso: string) {
  let now = Date.parse(iso);
  return { now: () => now, sleep: realClock.sleep, set: (s: string) => (now = Date.parse(s)) };
}

async function scheduledAt(db: postgres.Sql, syncId: string): Promise<string | null> {
  const [job] = await db`select run_at from graphile_worker.jobs where key = ${`schedule:${syncId}`}`;
  return job ? (job.run_at as Date).toISOString() : null;
}

t.test('nextFireTime follows the IANA time zone across daylight saving time', async (t) => {
  const s = { type: 'cron' as const, expression: '0 9 * * *', timezone: 'Europe/Paris' };
  t.equal(nextFireTime(s, new Date('2026-01-15T07:00:00Z'))!.toISOString(), '2026-01-15T08:00:00.000Z', 'winter: UTC+1');
  t.equal(nextFireTime(s, new Date('2026-07-15T06:00:00Z'))!.toISOString(), '2026-07-15T07:00:00.000Z', 'summer: UTC+2');
  t.equal(nextFireTime({ type: 'cron', expression: '30 8 * * 1', timezone: 'America/New_York' }, new Date('2026-03-04T00:00:00Z'))!.toISOString(), '2026-03-09T12:30:00.000Z', 'next Monday, EDT');
  t.equal(nextFireTime({ type: 'interval', everySeconds: 900 }, new Date('2026-01-01T00:00:00Z'))!.toISOString(), '2026-01-01T00:15:00.000Z');
  t.equal(nextFireTime({ type: 'manual' }, new Date()), null);
});

t.test('one scheduled job per sync, re-planned on every change, removed when manual or disabled', async (t) => {
  const clock = fixedClock('2026-01-15T07:00:00Z');
  const h = await startTestBackhaul(t, { start: { worker: false, engine: { clock } } });
  const crm = await startFakeCrm();
  t.teardown(() => crm.close());
  const { syncId } = await setupSync(t, h, crm.url, { rows: 1 });
  const db = postgres(h.databaseUrl, { max: 1, onnotice: () => {} });
  t.teardown(() => db.end());

  t.equal(await scheduledAt(db, syncId), null, 'a manual sync has no scheduled job');
  const cron = await h.request('PATCH', `/v1/syncs/${syncId}`, { body: { schedule: { type: 'cron', expression: '0 9 * * *', timezone: 'Europe/Paris' } } });
  t.equal(cron.status, 200);
  t.equal(await scheduledAt(db, syncId), '2026-01-15T08:00:00.000Z', '09:00 in Paris is 08:00Z in winter');

  clock.set('2026-07-15T06:00:00Z');
  await h.request('PATCH', `/v1/syncs/${syncId}`, { body: { schedule: { type: 'cron', expression: '30 9 * * *', timezone: 'Europe/Paris' } } });
  t.equal(await scheduledAt(db, syncId), '2026-07-15T07:30:00.000Z', 're-planned: 09:30 in Paris is 07:30Z in summer');
  const [{ n }] = await db`select count(*)::int as n from graphile_worker.jobs where key like ${`schedule:${syncId}`}`;
  t.equal(n, 1, 'still exactly one scheduled job');

  await h.request('PATCH', `/v1/syncs/${syncId}`, { body: { enabled: false } });
  t.equal(await scheduledAt(db, syncId), null, 'a disabled sync has no scheduled job');
  await h.request('PATCH', `/v1/syncs/${syncId}`, { body: { enabled: true } });
  t.equal(await scheduledAt(db, syncId), '2026-07-15T07:30:00.000Z');
  await h.request('DELETE', `/v1/syncs/${syncId}`);
  t.equal(await scheduledAt(db, syncId), null, 'deleting the sync removes its job');
});

async function fireNow(db: postgres.Sql, syncId: string) {
  await db`update graphile_worker._private_jobs set run_at = now() where key = ${`schedule:${syncId}`}`;
}

async function runsOf(h: TestBackhaul, syncId: string) {
  return (await h.request('GET', `/v1/syncs/${syncId}/runs`)).body.data as any[];
}

t.test('a due slot triggers a scheduled run and plans the next; a slot during an active run is skipped', async (t) => {
  // Anchored at the real time (graphile-worker compares run_at with the database clock), then moved by hand.
  const t0 = Math.ceil(Date.now() / 1000) * 1000;
  const at = (s: number) => new Date(t0 + s * 1000).toISOString();
  const clock = fixedClock(at(0));
  const h = await startTestBackhaul(t, { start: { worker: true, engine: { clock, retryBaseMs: 5, heartbeatMs: 200 } } });
  const crm = await startFakeCrm();
  t.teardown(() => crm.close());
  const { syncId } = await setupSync(t, h, crm.url, { rows: 5 });
  const db = postgres(h.databaseUrl, { max: 1, onnotice: () => {} });
  t.teardown(() => db.end());
  const until = async (cond: () => Promise<boolean>) => {
    const deadline = Date.now() + 20_000;
    while (!(await cond()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  };
  await h.request('PATCH', `/v1/syncs/${syncId}`, { body: { schedule: { type: 'interval', everySeconds: 3600 } } });
  t.equal(await scheduledAt(db, syncId), at(3600));

  clock.set(at(3600));
  await fireNow(db, syncId);
  await until(async () => (await runsOf(h, syncId)).length > 0);
  const [first] = await runsOf(h, syncId);
  t.equal(first.trigger, 'schedule');
  await waitForRun(h, first.id);
  t.equal(crm.contacts.size, 5);
  await until(async () => (await scheduledAt(db, syncId)) === at(7200));
  t.equal(await scheduledAt(db, syncId), at(7200), 'the next slot is planned');

  // A slow run is still going when the next slot comes: the slot is skipped, not queued.
  crm.faults = { delayMs: 1000 };
  await h.request('PATCH', `/v1/syncs/${syncId}`, { body: { delivery: { batchSize: 1, concurrency: 1 } } });
  await db`update src.people set name = 'x'`;
  const slow = await h.request('POST', `/v1/syncs/${syncId}/runs`, { body: {} });
  await waitForRun(h, slow.body.id, 20_000, (r) => r.status === 'running');
  clock.set(at(7200));
  await fireNow(db, syncId);
  await until(async () => (await scheduledAt(db, syncId)) === at(10800));
  t.equal(await scheduledAt(db, syncId), at(10800), 'the skipped slot still plans the next');
  t.equal((await runsOf(h, syncId)).length, 2, 'no run piled up behind the active one');
  await waitForRun(h, slow.body.id);
});

t.test('mapping suggestions from model columns to destination fields; apply adds them without touching existing ones', async (t) => {
  const h = await startTestBackhaul(t);
  const crm = await startFakeCrm();
  t.teardown(() => crm.close());
  const { syncId } = await setupSync(t, h, crm.url, { rows: 1 });
  await h.request('PUT', `/v1/syncs/${syncId}/mappings`, { body: [{ destinationField: 'name', source: { static: 'fixed' } }] });
  const s = await h.request('POST', `/v1/syncs/${syncId}/mappings/suggest`, { body: {} });
  t.equal(s.status, 200);
  t.same(s.body.data.map((d: any) => [d.destinationField, d.source.column]).sort(), [['age', 'age'], ['email', 'email']], 'name is already mapped: not suggested');
  t.ok(s.body.data.every((d: any) => d.confidence > 0.8 && d.reason));
  t.same(s.body.applied, []);
  t.equal((await h.request('GET', `/v1/syncs/${syncId}/mappings`)).body.data.length, 1, 'suggest alone changes nothing');
  const applied = await h.request('POST', `/v1/syncs/${syncId}/mappings/suggest`, { body: { apply: true } });
  t.equal(applied.body.applied.length, 2);
  const after = (await h.request('GET', `/v1/syncs/${syncId}/mappings`)).body.data;
  t.same(after.map((m: any) => m.destinationField).sort(), ['age', 'email', 'name']);
  t.same(after.find((m: any) => m.destinationField === 'name').source, { static: 'fixed' }, 'the existing mapping is untouched');
});
