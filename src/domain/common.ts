import { ConflictError, ForbiddenError, PreconditionFailedError, ValidationError } from '../errors.ts';
import { hasScope, type Actor, type Scope } from './context.ts';

// Rules shared by every resource service: scopes, slugs, versions, pagination, timestamps.

export function requireScope(actor: Actor, scope: Scope): void {
  if (!hasScope(actor, scope)) {
    throw new ForbiddenError(`This API key lacks the "${scope}" scope required for this operation.`);
  }
}

/** Slugs never contain "_", so a slug can never be mistaken for an id (which always does). */
export const SLUG_PATTERN = '^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$';
const SLUG_RE = new RegExp(SLUG_PATTERN);

export function isSlug(ref: string): boolean {
  return SLUG_RE.test(ref);
}

/**
 * If-Match carries the version we sent as ETag (`"3"`, also accepted bare or weak). `*` matches any.
 * Anything else that is not a version can never match: 412, as RFC 9110 says.
 */
export function checkVersion(ifMatch: string | undefined, current: number): void {
  if (ifMatch === undefined) return;
  const tags = ifMatch.split(',').map((s) => s.trim()).filter(Boolean);
  if (tags.includes('*')) return;
  const ok = tags.some((t) => t.replace(/^W\//, '').replace(/^"(.*)"$/, '$1') === String(current));
  if (!ok) throw new PreconditionFailedError(ifMatch, current);
}

/** A PUT that would create: any If-Match (even `*`, RFC 9110 §13.1.1) requires a current representation. */
export function checkAbsent(ifMatch: string | undefined): void {
  if (ifMatch !== undefined) throw new PreconditionFailedError(ifMatch, 0);
}

export function etag(version: number): string {
  return `"${version}"`;
}

export const DEFAULT_LIMIT = 50;
export const MAX_LIMIT = 200;

export interface Page<T> {
  data: T[];
  nextCursor: string | null;
}

export interface PageParams {
  limit?: number;
  cursor?: string;
}

/** Cursors are opaque to callers: base64url of the last id seen (ids sort by creation time). */
export function encodeCursor(id: string): string {
  return Buffer.from(JSON.stringify({ after: id })).toString('base64url');
}

export function decodeCursor(cursor: string | undefined): string | undefined {
  if (cursor === undefined || cursor === '') return undefined;
  try {
    const parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as { after?: unknown };
    if (typeof parsed.after === 'string' && parsed.after.length < 200) return parsed.after;
  } catch {
    // fall through
  }
  throw new ValidationError('The cursor is not one this API returned.', [{ path: '/cursor', message: 'is not a valid cursor' }], 'invalid_cursor');
}

export function pageLimit(limit: number | undefined): number {
  if (limit === undefined) return DEFAULT_LIMIT;
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIMIT) {
    throw new ValidationError(`limit must be an integer from 1 to ${MAX_LIMIT}.`, [{ path: '/limit', message: `must be from 1 to ${MAX_LIMIT}` }]);
  }
  return limit;
}

/** Fetch limit+1 rows, return `limit` and a cursor when there were more. */
export function toPage<R extends { id: string }, T>(rows: R[], limit: number, map: (r: R) => T): Page<T> {
  const more = rows.length > limit;
  const slice = more ? rows.slice(0, limit) : rows;
  return { data: slice.map(map), nextCursor: more ? encodeCursor(slice[slice.length - 1].id) : null };
}

export function iso(d: Date | null | undefined): string | null {
  return d ? d.toISOString() : null;
}

/** PostgreSQL unique violation on a given constraint → a 409 with a stable code. */
export function isUniqueViolation(e: unknown, constraint?: string): boolean {
  // drizzle wraps driver errors in DrizzleQueryError: the PostgreSQL error is its `cause`.
  let err = e as { code?: string; constraint_name?: string; constraint?: string; cause?: unknown } | undefined;
  for (let i = 0; i < 5 && err && err.code !== '23505' && err.cause; i++) err = err.cause as typeof err;
  if (err?.code !== '23505') return false;
  return constraint === undefined || err.constraint_name === constraint || err.constraint === constraint;
}

export function slugTaken(resource: string, slug: string): ConflictError {
  return new ConflictError('slug_taken', `A ${resource} with slug "${slug}" already exists in this workspace.`, {
    errors: [{ path: '/slug', message: 'is already used' }],
  });
}

/** Names of top-level fields whose JSON differs: the audit log records these, never values. */
export function changedFields(before: Record<string, unknown>, after: Record<string, unknown>, fields: string[]): string[] {
  return fields.filter((f) => !sameJson(before[f], after[f]));
}

/** Deep equality of JSON values, ignoring object key order (jsonb columns come back reordered). */
export function sameJson(a: unknown, b: unknown): boolean {
  return canonicalJson(a) === canonicalJson(b);
}

function canonicalJson(v: unknown): string {
  if (v instanceof Date) return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .filter((k) => o[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}

/** RFC 7396 JSON merge patch: objects merge recursively, null removes, anything else replaces. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return patch;
  const out: Record<string, unknown> =
    target !== null && typeof target === 'object' && !Array.isArray(target) ? { ...(target as Record<string, unknown>) } : {};
  for (const [k, v] of Object.entries(patch as Record<string, unknown>)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}
