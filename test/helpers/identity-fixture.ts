import type postgres from 'postgres';
import type { Test } from 'tap';
import { startFakeCrm } from '../fakes/crm.ts';
import { startTestBackhaul } from './backhaul.ts';
import { setupSync } from './sync-setup.ts';

// The destination-identity tests' fixture: a real Backhaul with its worker, a CRM fake that
// compares emails case-insensitively (and declares so), and a PostgreSQL → CRM sync whose
// model rows a test sets as (id, email, name).

export const engine = { retryBaseMs: 5, retryMaxMs: 50, heartbeatMs: 200 };
export const crmOpts = { caseInsensitive: true };

export async function identityFixture(t: Test, mode: string, rows: [number, string, string][], extra: Record<string, unknown> = {}) {
  const h = await startTestBackhaul(t, { start: { worker: true, engine } });
  const crm = await startFakeCrm({}, crmOpts);
  t.teardown(() => crm.close());
  const s = await setupSync(t, h, crm.url, { mode, crm: crmOpts, ...extra });
  await setRows(s.src, rows);
  return { h, crm, ...s };
}

/** Replaces the model's rows. */
export async function setRows(src: postgres.Sql, rows: [number, string | null, string][]): Promise<void> {
  await src`delete from src.people`;
  for (const [id, email, name] of rows) await src`insert into src.people (id, email, name, age) values (${id}, ${email}, ${name}, 30)`;
}
