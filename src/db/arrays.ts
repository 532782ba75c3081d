import type { Sql } from './client.ts';

// Array parameters for statements that carry one element per row of a batch (checkpoints,
// batch registrations). postgres.js writes an array parameter as an array literal, quoting and
// escaping every element in JavaScript: at a thousand rows per batch that was a visible part of
// the worker's CPU. These send one plain string instead, parsed by PostgreSQL.

/** An int[] (or bigint[] with `type`) from non-negative integers, as one comma-separated string. */
export function intArray(sql: Sql, xs: number[], type: 'int' | 'bigint' = 'int') {
  return type === 'int' ? sql`string_to_array(${xs.join(',')}, ',')::int[]` : sql`string_to_array(${xs.join(',')}, ',')::bigint[]`;
}

/** A text[] (nulls kept, order kept) sent as JSON text: JSON.stringify escapes natively. */
export function textArray(sql: Sql, xs: readonly (string | null)[]) {
  return sql`(select coalesce(array_agg(e order by i), '{}') from json_array_elements_text(${JSON.stringify(xs)}::json) with ordinality as x(e, i))`;
}
