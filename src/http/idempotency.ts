import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { and, eq, sql } from 'drizzle-orm';
import { idempotencyKeys } from '../db/schema.ts';
import type { Db } from '../db/client.ts';
import { hasScope, type Actor, type Scope } from '../domain/context.ts';
import { ConflictError, ForbiddenError, UnprocessableError, ValidationError } from '../errors.ts';
import { sha256 } from '../lib/crypto.ts';

// Idempotency-Key on POST: the first request claims the key in the database (so the guarantee
// holds across instances), its response is stored, and a retry with the same key and body gets
// that response back. Another body → 422; a retry while the first still runs → 409.
// 5xx answers release the key so that a retry can succeed.
//
// Replays never widen what a caller gets (issue 13, finding 1):
// - a key is claimed per API key: another key sending the same Idempotency-Key and body makes a
//   request of its own (executed, scope-checked by the services as any other);
// - the key's scopes (and owner flag) are stored with the response; a key downscoped since is
//   refused the replay (403) instead of being handed what it may no longer do;
// - a response carrying a secret shown once (an API token `bh_…`, a `whsec_…` signing secret; in
//   REST or GraphQL, under any field name or alias) is stored redacted, and a replay answers 409
//   `secret_already_issued` naming what was created. We chose this over encrypting the body
//   under the instance key: a secret shown once then exists in exactly one place (the first
//   answer), a database dump plus the key gives nothing for 24 h, and a client that lost the
//   first answer learns which resource was created and can revoke or rotate it.

const TTL_MS = 24 * 3600_000;
const LOCK_MS = 60_000;
const REPLAYED_HEADERS = ['content-type', 'location', 'etag'];

/**
 * Secrets Backhaul shows once, as they appear in a JSON answer: API tokens (`bh_` + ≥ 20
 * base64url characters; a key's 10-character `prefix` does not match) and Standard Webhooks
 * secrets (`whsec_` + base64). Matched by value, so GraphQL aliases cannot hide them.
 */
const SHOWN_ONCE = /"(?:bh_[A-Za-z0-9_-]{20,}|whsec_[A-Za-z0-9+/=]{20,})"/g;
const REDACTED = '"[redacted: shown once]"';

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

/** The response body as stored: secrets shown once replaced. */
export function redactShownOnce(body: string): { body: string; redacted: boolean } {
  let redacted = false;
  const out = body.replace(SHOWN_ONCE, () => {
    redacted = true;
    return REDACTED;
  });
  return { body: out, redacted };
}

/** What a key may do, as stored with its response: its scopes, plus `owner`. */
function powers(actor: Actor): string[] {
  return [...actor.scopes, ...(actor.owner ? ['owner'] : [])];
}

function stillHas(actor: Actor, stored: string[] | null): boolean {
  return (stored ?? []).every((p) => (p === 'owner' ? actor.owner : hasScope(actor, p as Scope)));
}

/** The first `id` in a (redacted) JSON answer, breadth first: what the original request created. */
function createdId(body: string): string | undefined {
  let queue: unknown[];
  try {
    queue = [JSON.parse(body)];
  } catch {
    return undefined;
  }
  for (let depth = 0; depth < 6 && queue.length; depth++) {
    const next: unknown[] = [];
    for (const v of queue) {
      if (!v || typeof v !== 'object' || Array.isArray(v)) continue;
      const id = (v as Record<string, unknown>).id;
      if (typeof id === 'string') return id;
      next.push(...Object.values(v));
    }
    queue = next;
  }
  return undefined;
}

export function registerIdempotency(app: FastifyInstance, db: Db): void {
  // Only POST routes carry the hooks (including GraphQL's, registered later in a child scope):
  // reads pay nothing for them.
  app.addHook('onRoute', (route) => {
    if (![route.method].flat().includes('POST')) return;
    route.preHandler = [...[route.preHandler ?? []].flat(), claim];
    route.onSend = [...[route.onSend ?? []].flat(), store];
  });

  const whereKey = (actor: Actor, key: string) =>
    and(eq(idempotencyKeys.workspaceId, actor.workspaceId), eq(idempotencyKeys.apiKeyId, actor.keyId ?? ''), eq(idempotencyKeys.key, key));

  async function claim(request: FastifyRequest, reply: FastifyReply) {
    const actor = request.actor;
    if (request.method !== 'POST' || !actor) return;
    const raw = request.headers['idempotency-key'];
    if (raw === undefined) return;
    const key = Array.isArray(raw) ? raw[0] : raw;
    if (!key || key.length > 255) {
      throw new ValidationError('Idempotency-Key must be 1 to 255 characters.', [{ path: '/headers/idempotency-key', message: 'must be 1 to 255 characters' }]);
    }
    const path = request.url.split('?')[0];
    const hash = sha256(`${request.method} ${request.url}\n${canonical(request.body ?? null)}`);
    const where = whereKey(actor, key);
    for (let attempt = 0; attempt < 3; attempt++) {
      const claimed = await db
        .insert(idempotencyKeys)
        .values({
          workspaceId: actor.workspaceId,
          apiKeyId: actor.keyId ?? '',
          scopes: powers(actor),
          key,
          method: request.method,
          path,
          requestHash: hash,
          state: 'in_progress',
          lockedUntil: new Date(Date.now() + LOCK_MS),
        })
        .onConflictDoNothing()
        .returning({ key: idempotencyKeys.key });
      if (claimed.length) {
        request.idempotencyKey = key;
        return;
      }
      const [row] = await db.select().from(idempotencyKeys).where(where);
      if (!row) continue; // released between our insert and select: claim again
      if (Date.now() - row.createdAt.getTime() > TTL_MS) {
        await db.delete(idempotencyKeys).where(and(where, eq(idempotencyKeys.createdAt, row.createdAt)));
        continue;
      }
      if (row.requestHash !== hash) {
        throw new UnprocessableError('idempotency_key_reused', 'This Idempotency-Key was already used with a different request.', {
          hint: 'Use a new key for a new request; reuse a key only to retry the very same request.',
        });
      }
      if (!stillHas(actor, row.scopes)) {
        throw new ForbiddenError(
          `This API key's scopes were reduced since the request that used this Idempotency-Key (it had ${(row.scopes ?? []).join(', ')}); its answer is not replayed.`,
        );
      }
      if (row.state === 'done') {
        reply.header('idempotent-replayed', 'true');
        const headers = (row.responseHeaders ?? {}) as Record<string, string>;
        if (row.secretRedacted) {
          if (headers.location) reply.header('location', headers.location);
          const resourceId = createdId(row.responseBody ?? '');
          throw new ConflictError(
            'secret_already_issued',
            `The request with this Idempotency-Key already succeeded (${row.statusCode}) and its answer carried a secret that is shown once, so it is not replayed.`,
            {
              hint: 'If the first answer was lost, revoke or rotate what it created and make a new request.',
              extra: { originalStatus: row.statusCode, ...(resourceId ? { resourceId } : {}) },
            },
          );
        }
        for (const [h, v] of Object.entries(headers)) reply.header(h, v);
        return reply.code(row.statusCode ?? 200).send(row.responseBody ?? '');
      }
      // in_progress: still running elsewhere, unless its holder died and the lock expired.
      if (row.lockedUntil && row.lockedUntil.getTime() < Date.now()) {
        const taken = await db
          .update(idempotencyKeys)
          .set({ lockedUntil: new Date(Date.now() + LOCK_MS) })
          .where(and(where, sql`${idempotencyKeys.lockedUntil} < now()`, eq(idempotencyKeys.state, 'in_progress')))
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
    const where = whereKey(request.actor, key);
    if (reply.statusCode >= 500) {
      await db.delete(idempotencyKeys).where(where);
      return payload;
    }
    const headers: Record<string, string> = {};
    for (const h of REPLAYED_HEADERS) {
      const v = reply.getHeader(h);
      if (v !== undefined) headers[h] = String(v);
    }
    const { body, redacted } = redactShownOnce(typeof payload === 'string' ? payload : String(payload ?? ''));
    await db
      .update(idempotencyKeys)
      .set({ state: 'done', statusCode: reply.statusCode, responseHeaders: headers, responseBody: body, secretRedacted: redacted, lockedUntil: null })
      .where(where);
    return payload;
  }
}

/** Deletes entries older than 24 h (called by the worker's maintenance job). */
export async function purgeIdempotencyKeys(db: Db): Promise<number> {
  const rows = await db.delete(idempotencyKeys).where(sql`${idempotencyKeys.createdAt} < now() - interval '24 hours'`).returning({ key: idempotencyKeys.key });
  return rows.length;
}
