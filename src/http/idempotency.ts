import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { and, eq, sql } from 'drizzle-orm';
import { idempotencyKeys } from '../db/schema.ts';
import type { Db } from '../db/client.ts';
import { ConflictError, UnprocessableError, ValidationError } from '../errors.ts';
import { sha256 } from '../lib/crypto.ts';

// Idempotency-Key on POST: the first request claims the key in the database (so the guarantee
// holds across instances), its response is stored, and a retry with the same key and body gets
// that response back. Another body → 422; a retry while the first still runs → 409.
// 5xx answers release the key so that a retry can succeed.

const TTL_MS = 24 * 3600_000;
const LOCK_MS = 60_000;
const REPLAYED_HEADERS = ['content-type', 'location', 'etag'];

declare module 'fastify' {
  interface FastifyRequest {
    idempotencyKey?: string;
  }
}

function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v && typeof v === 'object') {
    return `{${Object.keys(v as object)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}

export function registerIdempotency(app: FastifyInstance, db: Db): void {
  // Only POST routes carry the hooks (including GraphQL's, registered later in a child scope):
  // reads pay nothing for them.
  app.addHook('onRoute', (route) => {
    if (![route.method].flat().includes('POST')) return;
    route.preHandler = [...[route.preHandler ?? []].flat(), claim];
    route.onSend = [...[route.onSend ?? []].flat(), store];
  });

  async function claim(request: FastifyRequest, reply: FastifyReply) {
    if (request.method !== 'POST' || !request.actor) return;
    const raw = request.headers['idempotency-key'];
    if (raw === undefined) return;
    const key = Array.isArray(raw) ? raw[0] : raw;
    if (!key || key.length > 255) {
      throw new ValidationError('Idempotency-Key must be 1 to 255 characters.', [{ path: '/headers/idempotency-key', message: 'must be 1 to 255 characters' }]);
    }
    const workspaceId = request.actor.workspaceId;
    const path = request.url.split('?')[0];
    const hash = sha256(`${request.method} ${request.url}\n${canonical(request.body ?? null)}`);
    for (let attempt = 0; attempt < 3; attempt++) {
      const claimed = await db
        .insert(idempotencyKeys)
        .values({ workspaceId, key, method: request.method, path, requestHash: hash, state: 'in_progress', lockedUntil: new Date(Date.now() + LOCK_MS) })
        .onConflictDoNothing()
        .returning({ key: idempotencyKeys.key });
      if (claimed.length) {
        request.idempotencyKey = key;
        return;
      }
      const [row] = await db.select().from(idempotencyKeys).where(and(eq(idempotencyKeys.workspaceId, workspaceId), eq(idempotencyKeys.key, key)));
      if (!row) continue; // released between our insert and select: claim again
      if (Date.now() - row.createdAt.getTime() > TTL_MS) {
        await db.delete(idempotencyKeys).where(and(eq(idempotencyKeys.workspaceId, workspaceId), eq(idempotencyKeys.key, key), eq(idempotencyKeys.createdAt, row.createdAt)));
        continue;
      }
      if (row.requestHash !== hash) {
        throw new UnprocessableError('idempotency_key_reused', 'This Idempotency-Key was already used with a different request.', {
          hint: 'Use a new key for a new request; reuse a key only to retry the very same request.',
        });
      }
      if (row.state === 'done') {
        reply.header('idempotent-replayed', 'true');
        for (const [h, v] of Object.entries((row.responseHeaders ?? {}) as Record<string, string>)) reply.header(h, v);
        return reply.code(row.statusCode ?? 200).send(row.responseBody ?? '');
      }
      // in_progress: still running elsewhere, unless its holder died and the lock expired.
      if (row.lockedUntil && row.lockedUntil.getTime() < Date.now()) {
        const taken = await db
          .update(idempotencyKeys)
          .set({ lockedUntil: new Date(Date.now() + LOCK_MS) })
          .where(and(eq(idempotencyKeys.workspaceId, workspaceId), eq(idempotencyKeys.key, key), sql`${idempotencyKeys.lockedUntil} < now()`, eq(idempotencyKeys.state, 'in_progress')))
          .returning({ key: idempotencyKeys.key });
        if (taken.length) {
          request.idempotencyKey = key;
          return;
        }
      }
      throw new ConflictError('idempotency_in_progress', 'A request with this Idempotency-Key is still being processed.', { hint: 'Retry after it completes.' });
    }
    throw new ConflictError('idempotency_in_progress', 'A request with this Idempotency-Key is still being processed.', { hint: 'Retry after it completes.' });
  }

  async function store(request: FastifyRequest, reply: FastifyReply, payload: unknown) {
    const key = request.idempotencyKey;
    if (!key || !request.actor) return payload;
    request.idempotencyKey = undefined;
    const where = and(eq(idempotencyKeys.workspaceId, request.actor.workspaceId), eq(idempotencyKeys.key, key));
    if (reply.statusCode >= 500) {
      await db.delete(idempotencyKeys).where(where);
      return payload;
    }
    const headers: Record<string, string> = {};
    for (const h of REPLAYED_HEADERS) {
      const v = reply.getHeader(h);
      if (v !== undefined) headers[h] = String(v);
    }
    await db
      .update(idempotencyKeys)
      .set({ state: 'done', statusCode: reply.statusCode, responseHeaders: headers, responseBody: typeof payload === 'string' ? payload : String(payload ?? ''), lockedUntil: null })
      .where(where);
    return payload;
  }
}

/** Deletes entries older than 24 h (called by the worker's maintenance job). */
export async function purgeIdempotencyKeys(db: Db): Promise<number> {
  const rows = await db.delete(idempotencyKeys).where(sql`${idempotencyKeys.createdAt} < now() - interval '24 hours'`).returning({ key: idempotencyKeys.key });
  return rows.length;
}
