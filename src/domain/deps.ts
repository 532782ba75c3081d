import type { Database, Tx } from '../db/client.ts';

// What the services need from the process. Built once at start-up; routes, GraphQL
// resolvers and worker tasks all hold the same instance.

export interface SecretBox {
  seal(values: Record<string, unknown>): string;
  open(sealed: string): Record<string, unknown>;
  /**
   * A keyed fingerprint of a secret value (HMAC-SHA256 under a key derived from the instance's
   * encryption key, never a bare hash of the secret): `fp1_` + 22 base64url characters. `scope`
   * (e.g. `conn_…/password`) is mixed in so equal values in two places do not look alike.
   */
  fingerprint(scope: string, value: unknown): string;
}

export interface DomainHooks {
  /** Called inside the transaction that created, changed or deleted a sync (the engine re-plans its schedule). */
  syncChanged?: (tx: Tx, syncId: string, workspaceId: string) => Promise<void>;
}

export interface ServiceDeps {
  database: Database;
  secrets: SecretBox;
  denyPrivateNetworks: boolean;
  hooks: DomainHooks;
  env: Record<string, string | undefined>;
}
