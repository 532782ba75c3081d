import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createHash } from 'node:crypto';
import type { Sql } from './client.ts';

// Applies drizzle-kit's SQL migrations in journal order. Several instances may start at once:
// a session-level advisory lock on one reserved connection serialises them, and each file runs
// in its own transaction, recorded in backhaul_migrations.

const MIGRATIONS_DIR = join(dirname(fileURLToPath(import.meta.url)), '../../migrations');
const LOCK_ID = 7_231_944_001; // arbitrary, constant: "backhaul migrations"

interface JournalEntry {
  idx: number;
  tag: string;
}

export function listMigrations(dir = MIGRATIONS_DIR): { tag: string; statements: string[]; hash: string }[] {
  const journal = JSON.parse(readFileSync(join(dir, 'meta/_journal.json'), 'utf8')) as { entries: JournalEntry[] };
  return journal.entries
    .sort((a, b) => a.idx - b.idx)
    .map((e) => {
      const text = readFileSync(join(dir, `${e.tag}.sql`), 'utf8');
      return {
        tag: e.tag,
        hash: createHash('sha256').update(text).digest('hex'),
        statements: text.split('--> statement-breakpoint').map((s) => s.trim()).filter(Boolean),
      };
    });
}

export async function migrate(sql: Sql, log: (msg: string) => void = () => {}): Promise<string[]> {
  const applied: string[] = [];
  const conn = await sql.reserve();
  try {
    await conn`select pg_advisory_lock(${LOCK_ID})`;
    await conn`create table if not exists backhaul_migrations (
      tag text primary key, hash text not null, applied_at timestamptz not null default now())`;
    const done = new Set((await conn<{ tag: string }[]>`select tag from backhaul_migrations`).map((r) => r.tag));
    for (const m of listMigrations()) {
      if (done.has(m.tag)) continue;
      await conn.unsafe('begin');
      try {
        for (const stmt of m.statements) await conn.unsafe(stmt);
        await conn`insert into backhaul_migrations (tag, hash) values (${m.tag}, ${m.hash})`;
        await conn.unsafe('commit');
      } catch (e) {
        await conn.unsafe('rollback');
        throw new Error(`migration ${m.tag} failed: ${(e as Error).message}`, { cause: e });
      }
      applied.push(m.tag);
      log(`applied migration ${m.tag}`);
    }
  } finally {
    await conn`select pg_advisory_unlock(${LOCK_ID})`.catch(() => {});
    conn.release();
  }
  return applied;
}

/** True when every migration in the journal is recorded as applied (used by /readyz). */
export async function migrationsApplied(sql: Sql): Promise<boolean> {
  const rows = await sql<{ tag: string }[]>`select tag from backhaul_migrations`.catch(() => []);
  const done = new Set(rows.map((r) => r.tag));
  return listMigrations().every((m) => done.has(m.tag));
}
