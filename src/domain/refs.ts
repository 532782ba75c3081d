import { and, eq, fillPlaceholders, getTableColumns, sql } from 'drizzle-orm';
import type { PgColumn, PgTable } from 'drizzle-orm/pg-core';
import type { Sql, Tx } from '../db/client.ts';
import { NotFoundError, UnprocessableError, ValidationError } from '../errors.ts';
import { checkAbsent } from './common.ts';

// Addressing a resource "by id or slug", always inside the actor's workspace. A ref from
// another workspace is simply not found (404), never forbidden.

interface SluggedTable extends PgTable {
  id: PgColumn;
  slug: PgColumn;
  workspaceId: PgColumn;
}

export interface Prepared {
  execute(values: Record<string, unknown>): Promise<unknown[]>;
}

/**
 * A select of all of `table`'s columns, built once and run with values for its placeholders.
 * On the pool it goes to postgres.js directly, as a named statement: drizzle's execute layers
 * and generic row mapper cost more than a short read itself. Rows are decoded by the table's own
 * columns, as drizzle decodes them. In a transaction: drizzle's prepared query.
 */
export function prepareSelect(tx: Tx, table: PgTable, query: any, name: string): Prepared {
  const client = (tx as { $client?: Sql }).$client;
  if (!client) return query.prepare(name);
  const { sql: text, params } = query.toSQL() as { sql: string; params: unknown[] };
  const columns = Object.entries(getTableColumns(table));
  return {
    async execute(values) {
      const rows = await client.unsafe(text, fillPlaceholders(params, values) as never[], { prepare: true }).values();
      return rows.map((row) => {
        const out: Record<string, unknown> = {};
        for (let i = 0; i < columns.length; i++) out[columns[i][0]] = row[i] === null ? null : columns[i][1].mapFromDriverValue(row[i]);
        return out;
      });
    },
  };
}

/**
 * The lookup, built once per pool or transaction, table, column and lock mode: building a drizzle
 * query costs more than running it on the GET paths, and a named statement is planned once per
 * connection.
 */
const statements = new WeakMap<object, Map<PgTable, Prepared[]>>();

function lookup(tx: Tx, table: SluggedTable, byId: boolean, forUpdate: boolean): Prepared {
  let byTable = statements.get(tx);
  if (!byTable) statements.set(tx, (byTable = new Map()));
  let variants = byTable.get(table);
  if (!variants) byTable.set(table, (variants = []));
  const i = (byId ? 2 : 0) + (forUpdate ? 1 : 0);
  if (!variants[i]) {
    const where = and(eq(table.workspaceId, sql.placeholder('workspaceId')), eq(byId ? table.id : table.slug, sql.placeholder('ref')));
    // drizzle's generic table typing does not survive this level of abstraction; the shape is T's row.
    const q = (tx as any).select().from(table).where(where).limit(1);
    variants[i] = prepareSelect(tx, table, forUpdate ? q.for('update') : q, 'find_by_ref');
  }
  return variants[i];
}

/**
 * Ids always contain "_" and slugs never do, so a ref is looked up in one column: one index
 * lookup, whatever plan PostgreSQL settles on for the prepared statement (`id = $1 or slug = $1`
 * becomes a scan of the workspace's rows under a generic plan).
 */
export async function findByRef<T extends SluggedTable>(
  tx: Tx,
  table: T,
  workspaceId: string,
  ref: string,
  opts: { forUpdate?: boolean } = {},
): Promise<T['$inferSelect'] | undefined> {
  const rows = await lookup(tx, table, ref.includes('_'), opts.forUpdate ?? false).execute({ workspaceId, ref });
  return rows[0] as T['$inferSelect'] | undefined;
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
