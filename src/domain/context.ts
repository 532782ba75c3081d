// Who is acting. Every service call takes one; every query filters on its workspaceId.

export type Scope = 'read' | 'write' | 'admin';
export const SCOPES: Scope[] = ['read', 'write', 'admin'];

export interface Actor {
  workspaceId: string;
  /** The API key acting, or null for the system itself (bootstrap, CLI, worker). */
  keyId: string | null;
  scopes: Scope[];
  /** Owner keys may create and list workspaces. */
  owner: boolean;
  requestId?: string;
}

/** admin implies write implies read. */
export function hasScope(actor: Actor, needed: Scope): boolean {
  const rank = { read: 0, write: 1, admin: 2 } as const;
  return actor.scopes.some((s) => rank[s] >= rank[needed]);
}

export function systemActor(workspaceId: string): Actor {
  return { workspaceId, keyId: null, scopes: ['admin'], owner: true };
}
