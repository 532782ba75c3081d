import { and, eq, fillPlaceholders, getTableColumns, sql } from 'drizzle-orm';
import type { PgColumn, PgTable } from 'drizzle-orm/pg-core';
import type { Sql, Tx } from '../db/client.ts';
import { AppError, NotFoundError, UnprocessableError } from '../errors.ts';
import { checkAbsent, checkVersion, sameJson } from './common.ts';

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
export function prepareSelect(tx: Tx, table: PgTable, query: any, name: string, extra: string[] = []): Prepared {
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
        // Columns selected after the table's own (e.g. a joined slug), as the driver gives them.
        for (let k = 0; k < extra.length; k++) out[extra[k]] = row[columns.length + k];
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

/**
 * A list filter's reference (id or slug) → the id to filter on; null when a slug names nothing
 * (the list is then empty, as it is for an unknown id).
 */
export async function idOfRef(tx: Tx, table: SluggedTable, workspaceId: string, ref: string): Promise<string | null> {
  if (ref.includes('_')) return ref;
  const row = (await findByRef(tx, table, workspaceId, ref)) as { id: string } | undefined;
  return row?.id ?? null;
}

/** id → slug of the rows named, from several tables of one workspace, in one query (the slugs shown beside references). */
export async function slugsOf(tx: Tx, workspaceId: string, wanted: [SluggedTable, string[]][]): Promise<Map<string, string>> {
  const parts = wanted.filter(([, ids]) => ids.length).map(([table, ids]) => ({ table, ids: [...new Set(ids)] }));
  if (!parts.length) return new Map();
  const q = sql.join(
    parts.map(
      ({ table, ids }) =>
        sql`select ${table.id} as id, ${table.slug} as slug from ${table} where ${table.workspaceId} = ${workspaceId} and ${table.id} in (${sql.join(
          ids.map((id) => sql`${id}`),
          sql`, `,
        )})`,
    ),
    sql` union all `,
  );
  const rows = (await tx.execute(q)) as unknown as { id: string; slug: string }[];
  return new Map(rows.map((r) => [r.id, r.slug]));
}

/**
 * The slugs a PUT body carries beside its references (modelSlug beside modelId…) are read-only:
 * they must name the same resource as the reference (422 read_only_field otherwise).
 */
export function checkRefSlugs(pairs: [field: string, sent: string | undefined, actual: string][]): void {
  const errors = pairs
    .filter(([, sent, actual]) => sent !== undefined && sent !== actual)
    .map(([field, , actual]) => ({ path: `/${field}`, message: `is read-only and differs from the slug of the referenced resource ("${actual}")` }));
  if (errors.length) {
    throw new UnprocessableError('read_only_field', `Read-only fields that differ from what the body references: ${errors.map((e) => e.path.slice(1)).join(', ')}.`, {
      errors,
      hint: 'Leave the slugs beside references out (or as GET returned them); change the reference itself (modelId, destinationId, connectionId), by id or slug.',
    });
  }
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


/**
 * The slug a PUT creates: the path ref, which must be a slug (an unknown id cannot be created).
 * A body slug that differs from a slug path is refused (422 slug_mismatch), never a silent rename.
 */
export function putSlug(ref: string, bodySlug: string | undefined): string {
  if (ref.includes('_')) {
    throw new UnprocessableError('not_found_for_put', `"${ref}" looks like an id that does not exist; PUT creates only by slug.`, {
      hint: 'Use the slug in the URL to create the resource, e.g. PUT /v1/connections/my-warehouse.',
    });
  }
  checkSlugMatches(ref, bodySlug);
  return ref;
}

/** PUT /things/{slug}: the body's slug, when sent, must be that slug (a rename is PATCH, or PUT by id). */
export function checkSlugMatches(ref: string, bodySlug: string | undefined): void {
  if (ref.includes('_') || bodySlug === undefined || bodySlug === ref) return;
  throw new UnprocessableError('slug_mismatch', `The body's slug "${bodySlug}" differs from the URL's "${ref}".`, {
    errors: [{ path: '/slug', message: `must equal the slug in the URL ("${ref}")` }],
    hint: 'To rename, PATCH {"slug": …} or PUT to the resource\'s id.',
  });
}

/** Conditions of a PUT besides If-Match. */
export interface PutOptions {
  /** If-None-Match (RFC 9110 §13.1.2): `*` creates only; ETags that must not be the current version. */
  ifNoneMatch?: string;
  /** Run in the caller's transaction (a declarative apply writes many resources in one). */
  tx?: Tx;
}

/** The read-only fields a PUT body may carry (the GET body put back): checked against the stored resource. */
export interface ReadOnlyCheck<Row> {
  /** The resource as GET shows it. */
  view: (row: Row) => object;
  /** Read-only fields (see readOnlyFields in read-only.ts). Those the view does not have are left to the service. */
  fields: readonly string[];
}

function checkIfNoneMatch(ifNoneMatch: string | undefined, version: number): void {
  if (ifNoneMatch === undefined) return;
  const tags = ifNoneMatch.split(',').map((s) => s.trim()).filter(Boolean);
  if (tags.includes('*')) {
    throw new AppError(412, 'already_exists', 'Precondition failed', {
      detail: 'If-None-Match: * creates only, and the resource exists.',
      hint: 'Drop If-None-Match to replace it (with If-Match to make that conditional).',
      extra: { currentVersion: version },
    });
  }
  if (tags.some((t) => t.replace(/^W\//, '').replace(/^"(.*)"$/, '$1') === String(version))) {
    throw new AppError(412, 'version_matches', 'Precondition failed', { detail: `If-None-Match ${ifNoneMatch} names the current version (${version}).`, extra: { currentVersion: version } });
  }
}

const sameValue = (field: string, a: unknown, b: unknown) => {
  if (sameJson(a, b)) return true;
  if (field.endsWith('At') && typeof a === 'string' && typeof b === 'string') return Date.parse(a) === Date.parse(b) && !Number.isNaN(Date.parse(a));
  if (Array.isArray(a) && Array.isArray(b)) return sameJson([...a].map(String).sort(), [...b].map(String).sort());
  return false;
};

/**
 * Read-only fields in a PUT body are accepted and ignored when they equal the stored values, and
 * refused (422 read_only_field, naming each) when they differ: so a GET body can be PUT back, and
 * a stale copy (another version, another resource's id) is never applied. Removes the fields it
 * checked from `input`.
 */
export function checkReadOnly<Row>(input: Record<string, unknown>, row: Row | undefined, check: ReadOnlyCheck<Row>): void {
  const view = row === undefined ? undefined : (check.view(row) as Record<string, unknown>);
  const errors: { path: string; message: string }[] = [];
  for (const f of check.fields) {
    if (!(f in input)) continue;
    if (view === undefined) errors.push({ path: `/${f}`, message: 'is read-only, and the resource does not exist yet' });
    else if (!(f in view)) continue;
    else if (!sameValue(f, input[f], view[f])) errors.push({ path: `/${f}`, message: `is read-only and differs from the stored value (${JSON.stringify(view[f])})` });
    if (view === undefined || f in view) delete input[f];
  }
  if (errors.length) {
    errors.sort((a, b) => (a.path < b.path ? -1 : 1));
    throw new UnprocessableError('read_only_field', `Read-only fields that differ from the stored resource: ${errors.map((e) => e.path.slice(1)).join(', ')}.`, {
      errors,
      hint: 'Send them as GET returned them, or leave them out. Use If-Match to make the write conditional on a version.',
    });
  }
}

/**
 * PUT by id or slug: replaces the resource when it exists, creates it when the slug is new (never
 * under an unknown id; If-Match on a missing resource fails), in the caller's transaction. The row
 * is locked from here on, so the conditions checked here (If-None-Match, read-only fields) still
 * hold when `replace` writes.
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
  opts: PutOptions & { readOnly?: ReadOnlyCheck<T['$inferSelect']> } = {},
): Promise<{ created: boolean; value: V }> {
  checkSlugMatches(ref, input.slug);
  const existing = await findByRef(tx, table, workspaceId, ref, { forUpdate: true });
  if (!existing) {
    const slug = putSlug(ref, input.slug);
    checkAbsent(ifMatch);
    if (opts.readOnly) checkReadOnly(input as Record<string, unknown>, undefined, opts.readOnly);
    return { created: true, value: await create(slug) };
  }
  // If-Match first: a stale copy sent with its ETag is a 412, not a read-only mismatch.
  checkVersion(ifMatch, (existing as { version: number }).version);
  checkIfNoneMatch(opts.ifNoneMatch, (existing as { version: number }).version);
  if (opts.readOnly) checkReadOnly(input as Record<string, unknown>, existing, opts.readOnly);
  return { created: false, value: await replace() };
}
