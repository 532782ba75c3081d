import { and, eq, or } from 'drizzle-orm';
import type { PgColumn, PgTable } from 'drizzle-orm/pg-core';
import type { Tx } from '../db/client.ts';
import { NotFoundError, UnprocessableError, ValidationError } from '../errors.ts';
import { checkAbsent } from './common.ts';

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


/** The slug a PUT creates: the path ref, which must be a slug (an unknown id cannot be created). */
export function putSlug(ref: string, bodySlug: string | undefined): string {
  if (ref.includes('_')) {
    throw new UnprocessableError('not_found_for_put', `"${ref}" looks like an id that does not exist; PUT creates only by slug.`, {
      hint: 'Use the slug in the URL to create the resource, e.g. PUT /v1/connections/my-warehouse.',
    });
  }
  if (bodySlug !== undefined && bodySlug !== ref) {
    throw new ValidationError(`The body's slug "${bodySlug}" differs from the URL's "${ref}".`, [{ path: '/slug', message: 'must equal the slug in the URL' }]);
  }
  return ref;
}

/**
 * PUT by id or slug: replaces the resource when it exists, creates it when the slug is new (never
 * under an unknown id; If-Match on a missing resource fails), in the caller's transaction.
 */
export async function putBySlug<T extends SluggedTable, V>(
  tx: Tx,
  table: T,
  workspaceId: string,
  ref: string,
  input: { slug?: string },
  ifMatch: string | undefined,
  create: (slug: string) => Promise<V>,
  replace: () => Promise<V>,
): Promise<{ created: boolean; value: V }> {
  const existing = await (tx as any)
    .select({ id: table.id })
    .from(table)
    .where(and(eq(table.workspaceId, workspaceId), eq(ref.includes('_') ? table.id : table.slug, ref)));
  if (existing.length === 0) {
    const slug = putSlug(ref, input.slug);
    checkAbsent(ifMatch);
    return { created: true, value: await create(slug) };
  }
  return { created: false, value: await replace() };
}
