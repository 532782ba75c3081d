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
  /** Called inside the transaction that created, changed or deleted a sequence (its schedule is re-planned). */
  sequenceChanged?: (tx: Tx, sequenceId: string) => Promise<void>;
}

/** OAuth settings from the configuration (src/config.ts). */
export interface OAuthDeps {
  /** Client id/secret per provider name (BACKHAUL_<NAME>_CLIENT_ID / _CLIENT_SECRET). */
  clients: Record<string, { clientId?: string; clientSecret?: string; authorizeUrl?: string; tokenUrl?: string }>;
  /** Origins a returnUrl may point at (BACKHAUL_OAUTH_RETURN_ORIGINS). */
  returnOrigins: string[];
  /** The registered redirect URI; absent: BACKHAUL_PUBLIC_URL or the start request's origin + /v1/oauth/callback. */
  redirectUrl?: string;
  publicUrl?: string;
}

export interface ServiceDeps {
  database: Database;
  secrets: SecretBox;
  denyPrivateNetworks: boolean;
  hooks: DomainHooks;
  env: Record<string, string | undefined>;
  oauth?: OAuthDeps;
}
