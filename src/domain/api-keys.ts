import { Type, type Static } from '@sinclair/typebox';
import { and, asc, eq, gt, isNull } from 'drizzle-orm';
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
  constructor(deps: ServiceDeps) {
    this.deps = deps;
  }

  private get db() {
    return this.deps.database.db;
  }

  /** The actor behind a bearer token, or null. */
  async authenticate(token: string): Promise<Actor | null> {
    if (!token.startsWith('bh_') || token.length > 300) return null;
    const hash = hashToken(token);
    const [row] = await this.db.select().from(apiKeys).where(and(eq(apiKeys.tokenHash, hash), isNull(apiKeys.revokedAt))).limit(1);
    // The index lookup is by hash (no timing signal about the token); compare again in constant time.
    if (!row || !constantTimeEqual(row.tokenHash, hash)) return null;
    // last_used_at at minute precision, so reads do not turn into a write per request.
    if (!row.lastUsedAt || Date.now() - row.lastUsedAt.getTime() > 60_000) {
      void this.db.update(apiKeys).set({ lastUsedAt: new Date() }).where(eq(apiKeys.id, row.id)).catch(() => {});
    }
    return { workspaceId: row.workspaceId, keyId: row.id, scopes: row.scopes as Scope[], owner: row.owner };
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
    });
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
