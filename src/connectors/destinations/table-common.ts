import { ConnectorError } from '../../errors.ts';
import type { DestinationCapabilities, RowResult, WriteRequest } from '../types.ts';

// What the PostgreSQL and MySQL table destinations share: capabilities, payload checks and the
// bad-row isolation that lets one constraint violation cost one row, not the batch.

export const TABLE_CAPABILITIES: DestinationCapabilities = {
  operations: ['insert', 'update', 'upsert', 'delete'],
  modes: ['insert', 'update', 'upsert', 'mirror'],
  maxBatchSize: 5000,
  supportsDelete: true,
};

export function objectNotFound(object: string, where: string): ConnectorError {
  return new ConnectorError('object_not_found', `Table "${object}" does not exist in ${where}.`, {
    classification: 'fatal',
    status: 404,
    hint: 'Check the sync\'s object: it must be an existing table the user can see.',
  });
}

export function fieldNotFound(object: string, field: string): ConnectorError {
  return new ConnectorError('field_not_found', `Table "${object}" has no column "${field}".`, {
    classification: 'fatal',
    hint: 'Fix the mapping or the match key: each destination field must be a column of the table.',
  });
}

/** Columns the rows of a request write, checked against the table; fatal when one is unknown. */
export function columnsOf(req: WriteRequest, known: (name: string) => boolean): void {
  if (!known(req.matchField)) throw fieldNotFound(req.object, req.matchField);
  const seen = new Set<string>();
  for (const row of req.rows) {
    for (const k of Object.keys(row.payload)) {
      if (seen.has(k)) continue;
      seen.add(k);
      if (!known(k)) throw fieldNotFound(req.object, k);
    }
  }
}

/**
 * Groups row indexes by the set of fields they carry, so one statement never has to invent a
 * value (NULL vs column default) for a field a row does not have. Deletes only need the match field.
 */
export function groupByShape(req: WriteRequest, idxs: number[]): { fields: string[]; idxs: number[] }[] {
  const groups = new Map<string, { fields: string[]; idxs: number[] }>();
  idxs.forEach((i) => {
    const row = req.rows[i];
    let fields: string[];
    if (req.operation === 'delete') fields = [req.matchField];
    else {
      fields = Object.keys(row.payload).filter((k) => row.payload[k] !== undefined).sort();
    }
    const key = fields.join('\u0000');
    let g = groups.get(key);
    if (!g) groups.set(key, (g = { fields, idxs: [] }));
    g.idxs.push(i);
  });
  return [...groups.values()];
}

export function chunks<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

export interface Savepoints {
  savepoint(): Promise<void>;
  release(): Promise<void>;
  rollback(): Promise<void>;
  /** The failure comes from the rows' data (constraint, bad value), not the connection or the SQL. */
  isDataError(e: unknown): boolean;
  rejection(e: unknown): { code: string; message: string };
}

/**
 * Runs `exec` for the rows under a savepoint; when the statement fails because of data, rolls it
 * back and bisects until each bad row is alone, so every good row is written exactly once and
 * every bad row is rejected with the database's own message. `exec` may return per-row results
 * (e.g. `not_found` for updates); rows it leaves out succeeded.
 */
export async function isolate(
  sp: Savepoints,
  idxs: number[],
  exec: (idxs: number[]) => Promise<Map<number, RowResult> | void>,
  results: RowResult[],
): Promise<void> {
  await sp.savepoint();
  let outcome: Map<number, RowResult> | void;
  try {
    outcome = await exec(idxs);
  } catch (e) {
    if (!sp.isDataError(e)) throw e;
    await sp.rollback();
    await sp.release();
    if (idxs.length === 1) {
      const r = sp.rejection(e);
      results[idxs[0]] = { status: 'rejected', code: r.code, message: r.message, retryable: false };
      return;
    }
    const mid = Math.ceil(idxs.length / 2);
    await isolate(sp, idxs.slice(0, mid), exec, results);
    await isolate(sp, idxs.slice(mid), exec, results);
    return;
  }
  await sp.release();
  for (const i of idxs) results[i] = outcome?.get(i) ?? { status: 'succeeded' };
}

/** Rows that cannot be matched (no match value) are rejected up front; returns the others. */
export function rowsWithMatchValue(req: WriteRequest, results: RowResult[]): number[] {
  const keep: number[] = [];
  req.rows.forEach((row, i) => {
    const v = row.payload[req.matchField];
    if (req.operation !== 'insert' && (v === null || v === undefined || v === '')) {
      results[i] = { status: 'rejected', code: 'missing_match_value', message: `The match field "${req.matchField}" has no value.`, retryable: false };
    } else keep.push(i);
  });
  return keep;
}

export function notFound(field: string, value: unknown): RowResult {
  return { status: 'rejected', code: 'not_found', message: `No row with ${field} = ${JSON.stringify(value)} exists to update.`, retryable: false };
}
