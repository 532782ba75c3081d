import { and, eq, or } from 'drizzle-orm';
import type { PgColumn, PgTable } from 'drizzle-orm/pg-core';
import type { Tx } from '../db/client.ts';
import { NotFoundError, UnprocessableError } from '../errors.ts';

// Addressing a resource "by id or slug", always inside the actor's workspace. A ref from
// another workspace is simply not found (404), never forbidden.

interface SluggedTable extends PgTable {
  id: PgColumn;
  slug: PgColumn;
  workspaceId: PgColumn;
}

export async function findByRef<T extends SluggedTable>(
  tx: Tx,
  table: T,
  workspaceId: string,
  ref: string,
  opts: { forUpdate?: boolean } = {},
): Promise<T['$inferSelect'] | undefined> {
  const where = and(eq(table.workspaceId, workspaceId), or(eq(table.id, ref), eq(table.slug, ref)));
  // drizzle's generic table typing does not survive this level of abstraction; the shape is T's row.
  const q = (tx as any).select().from(table).where(where).limit(1);
  const rows = opts.forUpdate ? await q.for('update') : await q;
  return rows[0];
}

export async function getByRef<T extends SluggedTable>(
  tx: Tx,
  table: T,
  resource: string,
  workspaceId: string,
  ref: string,
  opts: { forUpdate?: boolean } = {},
): Promise<T['$inferSelect']> {
  const row = await findByRef(tx, table, workspaceId, ref, opts);
  if (!row) throw new NotFoundError(resource, ref);
  return row;
}

/** A reference inside a body (e.g. a model's connectionId): missing → 422 naming the field. */
export async function getReferenced<T extends SluggedTable>(
  tx: Tx,
  table: T,
  resource: string,
  workspaceId: string,
  ref: string,
  path: string,
): Promise<T['$inferSelect']> {
  const row = await findByRef(tx, table, workspaceId, ref);
  if (!row) {
    throw new UnprocessableError('invalid_reference', `${resource} "${ref}" does not exist in this workspace.`, {
      errors: [{ path, message: `no ${resource} with this id or slug` }],
    });
  }
  return row;
}

