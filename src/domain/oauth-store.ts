import { getConnectorType } from '../connectors/registry.ts';
import { secretsFromTokens, tokensFromSecrets, type OAuthTokenStore, type StoredOAuthTokens } from '../connectors/oauth/token-manager.ts';
import type { OAuthTokenResponse } from '../connectors/oauth/protocol.ts';
import { ConnectorError } from '../errors.ts';
import type { ServiceDeps } from './deps.ts';

// Where OAuth tokens live: among the connection's sealed secrets, in the control database. The
// refresh lock is the connection row's lock (SELECT … FOR UPDATE): PostgreSQL grants it to one
// transaction at a time across every process, and a waiter reads the row as the winner left it.

/** How long a refresh waits for another process's refresh of the same connection. */
const LOCK_TIMEOUT = '60s';

interface LockedRow {
  secrets_sealed: string | null;
  type: string;
}

/** Merges token secrets into a connection's secrets; null removes one. */
export function mergeSecrets(current: Record<string, unknown>, changes: Record<string, string | null>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...current };
  for (const [k, v] of Object.entries(changes)) {
    if (v === null) delete out[k];
    else out[k] = v;
  }
  return out;
}

export class PgOAuthTokenStore implements OAuthTokenStore {
  readonly #deps: ServiceDeps;
  constructor(deps: ServiceDeps) {
    this.#deps = deps;
  }

  #tokens(row: LockedRow | undefined, connectionId: string): { secrets: Record<string, unknown>; tokens: StoredOAuthTokens } {
    if (!row) {
      throw new ConnectorError('connection_not_found', `Connection ${connectionId} no longer exists.`, { classification: 'fatal', status: 404 });
    }
    const secrets = row.secrets_sealed ? this.#deps.secrets.open(row.secrets_sealed) : {};
    // `{ env }` references are resolved here too (a token set by reference is still a token).
    const resolved: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(secrets)) {
      resolved[k] = v && typeof v === 'object' && 'env' in v ? this.#deps.env[String((v as { env: string }).env)] : v;
    }
    return { secrets, tokens: tokensFromSecrets(resolved, Object.values(getConnectorType(row.type)?.oauth?.keepFields ?? {})) };
  }

  async read(connectionId: string): Promise<StoredOAuthTokens> {
    const [row] = await this.#deps.database.sql<LockedRow[]>`select secrets_sealed, type from connections where id = ${connectionId}`;
    return this.#tokens(row, connectionId).tokens;
  }

  async withRefreshLock<T>(connectionId: string, fn: (current: StoredOAuthTokens) => Promise<{ save?: OAuthTokenResponse; value: T }>): Promise<T> {
    return (await this.#deps.database.sql.begin(async (tx) => {
      await tx.unsafe(`set local lock_timeout = '${LOCK_TIMEOUT}'`);
      const [row] = await tx<LockedRow[]>`select secrets_sealed, type from connections where id = ${connectionId} for update`;
      const { secrets, tokens } = this.#tokens(row, connectionId);
      const { save, value } = await fn(tokens);
      if (save) {
        const merged = mergeSecrets(secrets, secretsFromTokens(save, tokens.refreshToken));
        const names = Object.keys(merged);
        // A refresh is not a user change: no version bump, no audit event.
        await tx`update connections set secrets_sealed = ${this.#deps.secrets.seal(merged)}, secret_names = ${names}, auth_status = null, auth_error = null where id = ${connectionId}`;
      }
      return value;
    })) as T;
  }

  async markReauthorizationRequired(connectionId: string, refreshToken: string | undefined, reason: string): Promise<void> {
    await this.#deps.database.sql.begin(async (tx) => {
      const [row] = await tx<LockedRow[]>`select secrets_sealed, type from connections where id = ${connectionId} for update`;
      if (!row) return;
      // A new flow completed meanwhile: its tokens are good, leave the status alone.
      if (this.#tokens(row, connectionId).tokens.refreshToken !== refreshToken) return;
      await tx`update connections set auth_status = 'reauthorization_required', auth_error = ${reason.slice(0, 1000)} where id = ${connectionId}`;
    });
  }
}
