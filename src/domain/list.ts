import { and, asc, desc, eq, getTableColumns, gt, ilike, lt, or, sql, type SQL } from 'drizzle-orm';
import type { PgColumn, PgTable } from 'drizzle-orm/pg-core';
import type { Tx } from '../db/client.ts';
import { ValidationError } from '../errors.ts';
import { pageLimit, type Page } from './common.ts';
import { prepareSelect, type Prepared } from './refs.ts';

// Listing a workspace's slugged resources with the orderings a UI needs (creation, name, slug,
// last update), a name/slug search, and keyset pagination: the cursor carries the last row's id
// and sort value, so pages stay stable while rows are added. updatedAt is compared at millisecond
// precision, the precision the API shows, so a cursor can be built from any returned item.

export const ORDER_FIELDS = ['createdAt', 'name', 'slug', 'updatedAt'] as const;
export type OrderField = (typeof ORDER_FIELDS)[number];
export type Direction = 'asc' | 'desc';

export interface ListOptions {
  limit?: number;
  cursor?: string;
  orderBy?: OrderField;
  direction?: Direction;
  /** Case-insensitive substring of the name or slug. */
  search?: string;
}

interface ListedTable extends PgTable {
  id: PgColumn;
  slug: PgColumn;
  name: PgColumn;
  updatedAt: PgColumn;
  workspaceId: PgColumn;
}

interface Listed {
  id: string;
  name: string;
  slug: string;
  updatedAt: string;
}

const invalidCursor = () =>
  new ValidationError('The cursor is not one this API returned (or was made for another ordering).', [{ path: '/cursor', message: 'is not a valid cursor' }], 'invalid_cursor');

/** The cursor that continues after `item` in a list ordered by `orderBy`. */
export function cursorAfter(item: Listed, orderBy: OrderField = 'createdAt'): string {
  const v = orderBy === 'createdAt' ? undefined : item[orderBy];
  return Buffer.from(JSON.stringify(v === undefined ? { after: item.id } : { after: item.id, o: orderBy, v })).toString('base64url');
}

function decode(cursor: string | undefined, orderBy: OrderField): { after: string; v?: string } | undefined {
  if (cursor === undefined || cursor === '') return undefined;
  let parsed: { after?: unknown; o?: unknown; v?: unknown };
  try {
    parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw invalidCursor();
  }
  if (typeof parsed.after !== 'string' || parsed.after.length > 200) throw invalidCursor();
  if (orderBy === 'createdAt') {
    if (parsed.o !== undefined) throw invalidCursor();
    return { after: parsed.after };
  }
  if (parsed.o !== orderBy || typeof parsed.v !== 'string' || parsed.v.length > 1000) throw invalidCursor();
  if (orderBy === 'updatedAt' && Number.isNaN(Date.parse(parsed.v))) throw invalidCursor();
  return { after: parsed.after, v: parsed.v };
}

/**
 * Unfiltered lists (the common case) reuse their query, built once per table and shape: building
 * a drizzle query costs about as much as running it here, and a named statement is planned once
 * per connection. Values are always placeholders, so the SQL text depends on the shape only.
 */
const prepared = new WeakMap<object, Map<PgTable, Map<string, Prepared>>>();

/**
 * Columns of other tables selected beside each row, by inner joins (the slugs shown beside a
 * resource's references): in the same statement, so a page costs one query.
 */
export interface ListJoin {
  columns: Record<string, PgColumn>;
  join: (q: any) => any;
}

function listQuery(
  db: Tx,
  table: ListedTable,
  orderBy: OrderField,
  dir: Direction,
  cursor: 'id' | 'v' | undefined,
  search: boolean,
  filters: (SQL | undefined)[],
  joined?: ListJoin,
): Prepared {
  const p = (name: string) => sql.placeholder(name);
  const key: SQL | PgColumn =
    orderBy === 'createdAt' ? table.id : orderBy === 'updatedAt' ? sql`date_trunc('milliseconds', ${table.updatedAt})` : table[orderBy];
  const conds: (SQL | undefined)[] = [eq(table.workspaceId, p('workspaceId')), ...filters];
  if (search) conds.push(or(ilike(table.name, p('pattern')), ilike(table.slug, p('pattern'))));
  if (cursor === 'id') conds.push((dir === 'asc' ? gt : lt)(table.id, p('after')));
  if (cursor === 'v') {
    const v = orderBy === 'updatedAt' ? sql`${p('v')}::timestamptz` : sql`${p('v')}::text`;
    conds.push(dir === 'asc' ? sql`(${key}, ${table.id}) > (${v}, ${p('after')})` : sql`(${key}, ${table.id}) < (${v}, ${p('after')})`);
  }
  const order = dir === 'asc' ? asc : desc;
  const from = joined ? joined.join((db as any).select({ ...getTableColumns(table), ...joined.columns }).from(table)) : (db as any).select().from(table);
  const q = from.where(and(...conds)).orderBy(order(key), order(table.id)).limit(p('limit'));
  return prepareSelect(db, table, q, 'list_ordered', joined ? Object.keys(joined.columns) : []);
}

export async function listOrdered<T extends ListedTable, V extends Listed>(
  db: Tx,
  table: T,
  workspaceId: string,
  filters: (SQL | undefined)[],
  opts: ListOptions,
  view: (row: T['$inferSelect']) => V,
  joined?: ListJoin,
): Promise<Page<V>> {
  const limit = pageLimit(opts.limit);
  const orderBy = opts.orderBy ?? 'createdAt';
  const dir = opts.direction ?? 'asc';
  const cur = decode(opts.cursor, orderBy);
  const cursor = cur ? (cur.v === undefined ? 'id' : 'v') : undefined;
  const search = !!opts.search;
  const values = {
    workspaceId,
    limit: limit + 1,
    pattern: search ? `%${opts.search!.replace(/[\\%_]/g, (c) => `\\${c}`)}%` : undefined,
    after: cur?.after,
    v: cur?.v,
  };
  const active = filters.filter((f) => f !== undefined);
  let q: Prepared;
  if (active.length) q = listQuery(db, table, orderBy, dir, cursor, search, active, joined);
  else {
    let byTable = prepared.get(db);
    if (!byTable) prepared.set(db, (byTable = new Map()));
    let byShape = byTable.get(table);
    if (!byShape) byTable.set(table, (byShape = new Map()));
    const shape = `${orderBy} ${dir} ${cursor} ${search} ${joined ? Object.keys(joined.columns).join(',') : ''}`;
    q = byShape.get(shape) ?? byShape.set(shape, listQuery(db, table, orderBy, dir, cursor, search, [], joined)).get(shape)!;
  }
  const rows = (await q.execute(values)) as T['$inferSelect'][];
  const more = rows.length > limit;
  const data = (more ? rows.slice(0, limit) : rows).map(view);
  return { data, nextCursor: more ? cursorAfter(data[data.length - 1], orderBy) : null };
}
