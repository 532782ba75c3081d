import { Type, type Static } from '@sinclair/typebox';
import { and, asc, eq, gt, isNull, sql } from 'drizzle-orm';
import { apiKeys, workspaces } from '../db/schema.ts';
import type { Tx } from '../db/client.ts';
import { ConflictError, ForbiddenError, NotFoundError } from '../errors.ts';
import { constantTimeEqual, hashToken, newApiToken } from '../lib/crypto.ts';
import { newId } from '../lib/ids.ts';
import { assertValid } from '../lib/validate.ts';
import { recordAudit } from './audit.ts';
import { SCOPES, type Actor, type Scope } from './context.ts';
import { decodeCursor, iso, isUniqueViolation, pageLimit, requireScope, SLUG_PATTERN, toPage, type Page } from './common.ts';
import type { ServiceDeps } from './deps.ts';
import { Name } from './connections.ts';

// API keys and workspaces. A key is a 256-bit random bearer token `bh_…`; only its SHA-256
// is stored, and lookups compare hashes in constant time.

/**
 * NOTIFY channel of key changes: the payload is a key id (forget that key) or empty (forget all).
 * A trigger on api_keys (migration 0005) sends it for every revocation, scope/owner change or
 * deletion, by the API or by hand; a change whose notification is lost shows within the TTL.
 */
export const API_KEYS_CHANNEL = 'backhaul_api_keys';

export interface ApiKeyCacheOptions {
  /** How long a successful lookup is trusted without asking the database again. */
  ttlMs?: number;
  maxEntries?: number;
}

interface CachedKey {
  actor: Actor;
  expires: number;
  /** When last_used_at was last written (or read), ms. */
  lastUsed: number;
}

/** last_used_at is kept at minute precision, so reads do not turn into a write per request. */
const LAST_USED_EVERY_MS = 60_000;

const ScopeT = Type.Union(SCOPES.map((s) => Type.Literal(s)));
export const ApiKeyCreate = Type.Object(
  { name: Name, scopes: Type.Array(ScopeT, { minItems: 1, uniqueItems: true }) },
  { additionalProperties: false, $id: 'ApiKeyCreate' },
);
export const ApiKeyView = Type.Object(
  {
    id: Type.String(),
    name: Type.String(),
    scopes: Type.Array(ScopeT),
    prefix: Type.String({ description: 'First characters of the token, to recognise it' }),
    owner: Type.Boolean(),
    createdAt: Type.String({ format: 'date-time' }),
    lastUsedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  },
  { $id: 'ApiKey' },
);
export const ApiKeyCreated = Type.Object(
  { ...ApiKeyView.properties, token: Type.String({ description: 'Shown once; store it now' }) },
  { $id: 'ApiKeyCreated' },
);
export const WorkspaceCreate = Type.Object(
  { slug: Type.String({ pattern: SLUG_PATTERN, maxLength: 63 }), name: Name },
  { additionalProperties: false, $id: 'WorkspaceCreate' },
);
export const WorkspaceView = Type.Object(
  { id: Type.String(), slug: Type.String(), name: Type.String(), createdAt: Type.String({ format: 'date-time' }), updatedAt: Type.String({ format: 'date-time' }) },
  { $id: 'Workspace' },
);

export type ApiKeyViewT = Static<typeof ApiKeyView>;
export type ApiKeyCreatedT = Static<typeof ApiKeyCreated>;
export type WorkspaceViewT = Static<typeof WorkspaceView>;
type KeyRow = typeof apiKeys.$inferSelect;
type WsRow = typeof workspaces.$inferSelect;

export function apiKeyView(r: KeyRow): ApiKeyViewT {
  return { id: r.id, name: r.name, scopes: r.scopes as Scope[], prefix: r.tokenPrefix, owner: r.owner, createdAt: iso(r.createdAt)!, lastUsedAt: iso(r.lastUsedAt) };
}

export function workspaceView(r: WsRow): WorkspaceViewT {
  return { id: r.id, slug: r.slug, name: r.name, createdAt: iso(r.createdAt)!, updatedAt: iso(r.updatedAt)! };
}

/** Inserts a key; with `token` given (bootstrap from env) that value is used instead of a random one. */
export async function insertApiKey(
  tx: Tx,
  workspaceId: string,
  input: { name: string; scopes: Scope[]; owner?: boolean; token?: string },
): Promise<ApiKeyCreatedT> {
  const token = input.token ?? newApiToken();
  const [row] = await tx
    .insert(apiKeys)
    .values({ id: newId('apiKey'), workspaceId, name: input.name, tokenHash: hashToken(token), tokenPrefix: token.slice(0, 10), scopes: input.scopes, owner: input.owner ?? false })
    .returning();
  return { ...apiKeyView(row), token };
}

export class ApiKeyService {
  private readonly deps: ServiceDeps;
  /**
   * Valid keys by token hash (never the token), so most requests skip the database. Only used
   * while change notifications are received (listen()); unknown and revoked tokens are never kept.
   */
  private readonly cache = new Map<string, CachedKey>();
  /** Bumped by every invalidation: a lookup that raced with one is not cached. */
  private generation = 0;
  private listening = false;
  private ttlMs = 2_000;
  private maxEntries = 10_000;
  private byHash?: ReturnType<ApiKeyService['prepareByHash']>;

  constructor(deps: ServiceDeps) {
    this.deps = deps;
  }

  private get db() {
    return this.deps.database.db;
  }

  private prepareByHash() {
    return this.db
      .select({ id: apiKeys.id, workspaceId: apiKeys.workspaceId, tokenHash: apiKeys.tokenHash, scopes: apiKeys.scopes, owner: apiKeys.owner, lastUsedAt: apiKeys.lastUsedAt })
      .from(apiKeys)
      .where(and(eq(apiKeys.tokenHash, sql.placeholder('hash')), isNull(apiKeys.revokedAt)))
      .limit(1)
      .prepare('api_key_by_hash');
  }

  /** The actor behind a bearer token, or null. */
  async authenticate(token: string): Promise<Actor | null> {
    if (!token.startsWith('bh_') || token.length > 300) return null;
    const hash = hashToken(token);
    const hit = this.cache.get(hash);
    if (hit) {
      const now = Date.now();
      if (hit.expires > now) {
        this.touch(hit, now);
        return hit.actor;
      }
      this.cache.delete(hash);
    }
    const generation = this.generation;
    this.byHash ??= this.prepareByHash();
    const [row] = await this.byHash.execute({ hash });
    // The index lookup is by hash (no timing signal about the token); compare again in constant time.
    if (!row || !constantTimeEqual(row.tokenHash, hash)) return null;
    const now = Date.now();
    const actor: Actor = { workspaceId: row.workspaceId, keyId: row.id, scopes: Object.freeze([...(row.scopes as Scope[])]) as Scope[], owner: row.owner };
    const entry: CachedKey = { actor: Object.freeze(actor), expires: now + this.ttlMs, lastUsed: row.lastUsedAt?.getTime() ?? 0 };
    this.touch(entry, now);
    if (this.listening && generation === this.generation && this.ttlMs > 0) {
      // Oldest first: a Map iterates in insertion order.
      if (this.cache.size >= this.maxEntries) this.cache.delete(this.cache.keys().next().value!);
      this.cache.set(hash, entry);
    }
    return entry.actor;
  }

  /** Records use at most once a minute per key, off the request path. */
  private touch(entry: CachedKey, now: number): void {
    if (now - entry.lastUsed <= LAST_USED_EVERY_MS) return;
    entry.lastUsed = now;
    void this.db.update(apiKeys).set({ lastUsedAt: new Date(now) }).where(eq(apiKeys.id, entry.actor.keyId!)).catch(() => {});
  }

  /** Drops cached keys: one key by id, or all of them. */
  forget(keyId?: string): void {
    this.generation++;
    if (keyId === undefined) this.cache.clear();
    else for (const [hash, e] of this.cache) if (e.actor.keyId === keyId) this.cache.delete(hash);
  }

  /**
   * Follows key changes made by any instance (NOTIFY on API_KEYS_CHANNEL) and only then caches
   * lookups. postgres.js re-subscribes after a lost connection and calls onlisten again: the cache
   * is emptied then, since notifications sent meanwhile were missed (until then an entry lives at
   * most its TTL). Returns the way to stop.
   */
  async listen(cache: ApiKeyCacheOptions = {}): Promise<() => Promise<void>> {
    this.ttlMs = cache.ttlMs ?? this.ttlMs;
    this.maxEntries = Math.max(1, cache.maxEntries ?? this.maxEntries);
    const sub = await this.deps.database.sql.listen(
      API_KEYS_CHANNEL,
      (keyId) => this.forget(keyId || undefined),
      () => {
        this.forget();
        this.listening = true;
      },
    );
    return async () => {
      this.listening = false;
      this.forget();
      await sub.unlisten();
    };
  }

  async list(actor: Actor, params: { limit?: number; cursor?: string } = {}): Promise<Page<ApiKeyViewT>> {
    requireScope(actor, 'admin');
    const limit = pageLimit(params.limit);
    const after = decodeCursor(params.cursor);
    const conds = [eq(apiKeys.workspaceId, actor.workspaceId), isNull(apiKeys.revokedAt)];
    if (after) conds.push(gt(apiKeys.id, after));
    const rows = await this.db.select().from(apiKeys).where(and(...conds)).orderBy(asc(apiKeys.id)).limit(limit + 1);
    return toPage(rows, limit, apiKeyView);
  }

  async create(actor: Actor, input: Static<typeof ApiKeyCreate>): Promise<ApiKeyCreatedT> {
    requireScope(actor, 'admin');
    assertValid(ApiKeyCreate, input);
    return this.db.transaction(async (tx) => {
      const created = await insertApiKey(tx, actor.workspaceId, input);
      await recordAudit(tx, actor, 'create', 'api_key', created.id, ['name', 'scopes']);
      return created;
    });
  }

  async revoke(actor: Actor, id: string): Promise<void> {
    requireScope(actor, 'admin');
    await this.db.transaction(async (tx) => {
      const rows = await tx
        .update(apiKeys)
        .set({ revokedAt: new Date() })
        .where(and(eq(apiKeys.id, id), eq(apiKeys.workspaceId, actor.workspaceId), isNull(apiKeys.revokedAt)))
        .returning({ id: apiKeys.id });
      if (!rows.length) throw new NotFoundError('api key', id);
      await recordAudit(tx, actor, 'delete', 'api_key', id);
      // Delivered on commit, to every instance (this one included).
      await tx.execute(sql`select pg_notify(${API_KEYS_CHANNEL}, ${id})`);
    });
    // Not waiting for our own notification: the next request here must already be refused.
    this.forget(id);
  }

  async listWorkspaces(actor: Actor, params: { limit?: number; cursor?: string } = {}): Promise<Page<WorkspaceViewT>> {
    requireOwner(actor);
    const limit = pageLimit(params.limit);
    const after = decodeCursor(params.cursor);
    const rows = await this.db.select().from(workspaces).where(after ? gt(workspaces.id, after) : undefined).orderBy(asc(workspaces.id)).limit(limit + 1);
    return toPage(rows, limit, workspaceView);
  }

  /** Creates a workspace and its first admin key (returned once). */
  async createWorkspace(actor: Actor, input: Static<typeof WorkspaceCreate>): Promise<{ workspace: WorkspaceViewT; apiKey: ApiKeyCreatedT }> {
    requireOwner(actor);
    assertValid(WorkspaceCreate, input);
    try {
      return await this.db.transaction(async (tx) => {
        const [ws] = await tx.insert(workspaces).values({ id: newId('workspace'), slug: input.slug, name: input.name }).returning();
        const apiKey = await insertApiKey(tx, ws.id, { name: `${input.slug} admin`, scopes: ['admin'] });
        await recordAudit(tx, actor, 'create', 'workspace', ws.id, ['slug', 'name']);
        return { workspace: workspaceView(ws), apiKey };
      });
    } catch (e) {
      if (isUniqueViolation(e)) throw new ConflictError('slug_taken', `A workspace with slug "${input.slug}" already exists.`, { errors: [{ path: '/slug', message: 'is already used' }] });
      throw e;
    }
  }
}

function requireOwner(actor: Actor): void {
  if (!actor.owner) throw new ForbiddenError('Only an owner API key can manage workspaces.');
}
