import { ConnectorError } from '../../errors.ts';
import type { OAuthTokenSource, ResolvedSecrets } from '../types.ts';
import { reauthorizationRequired, refreshAccessToken, type OAuthClient, type OAuthTokenResponse, type OAuthTransport } from './protocol.ts';

// Access tokens of OAuth-connected connections. One manager per process: it caches each
// connection's current token, and refreshes it with at most one refresh per connection at a time
// in this process (callers share one promise) AND across processes (the store's lock, a row lock
// on the connection in the control database). After waiting for the lock it re-reads the stored
// tokens, so a process that waited uses the token another one just obtained instead of spending the
// refresh token again: providers that rotate refresh tokens invalidate the old one on use, and a
// second refresh with it would log the connection out.

/** Names of the secrets that hold a connection's tokens (sealed with its other secrets). */
export const OAUTH_SECRET = {
  accessToken: 'accessToken',
  refreshToken: 'refreshToken',
  /** ISO-8601 expiry of the access token. */
  expiresAt: 'accessTokenExpiresAt',
  /** The connection's own OAuth client secret (with config.oauth.clientId). */
  clientSecret: 'clientSecret',
} as const;

/** The `secrets` entries a type with OAuth support declares (add its keepFields' secrets). */
export const OAUTH_SECRET_SPECS = [
  { name: OAUTH_SECRET.accessToken, required: false, description: 'Access token: a static / private-app token, or the one the OAuth flow stores' },
  { name: OAUTH_SECRET.refreshToken, required: false, description: 'OAuth refresh token (stored by the OAuth flow)' },
  { name: OAUTH_SECRET.expiresAt, required: false, description: 'Expiry of the OAuth access token, ISO-8601 (stored by the OAuth flow)' },
  { name: OAUTH_SECRET.clientSecret, required: false, description: "This connection's OAuth client secret, with config.oauth.clientId (default: Backhaul's configured client)" },
];

export interface StoredOAuthTokens {
  accessToken?: string;
  refreshToken?: string;
  /** Epoch ms; absent when the provider gave no lifetime (valid until refused). */
  expiresAt?: number;
  /** Kept token-response fields, by secret name. */
  extras: Record<string, string>;
}

/** Reads the token secrets of a connection from its resolved secrets. */
export function tokensFromSecrets(secrets: Record<string, unknown>, extraNames: Iterable<string> = []): StoredOAuthTokens {
  const str = (k: string) => (typeof secrets[k] === 'string' && secrets[k] ? (secrets[k] as string) : undefined);
  const exp = str(OAUTH_SECRET.expiresAt) ? Date.parse(str(OAUTH_SECRET.expiresAt)!) : NaN;
  const extras: Record<string, string> = {};
  for (const n of extraNames) if (str(n)) extras[n] = str(n)!;
  return {
    accessToken: str(OAUTH_SECRET.accessToken),
    refreshToken: str(OAUTH_SECRET.refreshToken),
    ...(Number.isFinite(exp) ? { expiresAt: exp } : {}),
    extras,
  };
}

/** The secrets to merge into a connection's secrets for a token response. */
export function secretsFromTokens(t: OAuthTokenResponse, previousRefreshToken?: string): Record<string, string | null> {
  return {
    [OAUTH_SECRET.accessToken]: t.accessToken,
    // Providers that do not rotate answer no refresh token: the old one stays valid.
    [OAUTH_SECRET.refreshToken]: t.refreshToken ?? previousRefreshToken ?? null,
    [OAUTH_SECRET.expiresAt]: t.expiresAt ? new Date(t.expiresAt).toISOString() : null,
    ...t.extras,
  };
}

/**
 * Where tokens live (the control database; src/domain/oauth.ts). Implementations must make
 * `withRefreshLock` exclusive per connection across every process sharing the database, and read
 * the tokens after the lock is granted.
 */
export interface OAuthTokenStore {
  /** The connection's current tokens, without locking. */
  read(connectionId: string): Promise<StoredOAuthTokens>;
  /**
   * Runs `fn` holding the connection's refresh lock, with the tokens read under it; saves
   * `save` (a new token response) before releasing the lock. A throw from `fn` saves nothing.
   */
  withRefreshLock<T>(connectionId: string, fn: (current: StoredOAuthTokens) => Promise<{ save?: OAuthTokenResponse; value: T }>, signal?: AbortSignal): Promise<T>;
  /** Flags the connection (authStatus) unless its refresh token changed since `refreshToken` failed. */
  markReauthorizationRequired(connectionId: string, refreshToken: string | undefined, reason: string): Promise<void>;
}

/** One connection as the manager sees it; the client is resolved only when a refresh needs it. */
export interface OAuthConnectionRef {
  id: string;
  client: () => OAuthClient;
}

export interface OAuthTokenManagerOptions {
  transport: OAuthTransport;
  /** Refresh this long before the access token expires (ms, default 120 000). */
  refreshBeforeMs?: number;
  now?: () => number;
}

interface Entry {
  current?: StoredOAuthTokens;
  /** Tokens a remote refused (401): never handed out again. */
  refused: Set<string>;
  pending?: Promise<StoredOAuthTokens>;
}

export class OAuthTokenManager {
  readonly #store: OAuthTokenStore;
  readonly #opts: Required<Omit<OAuthTokenManagerOptions, 'now'>> & { now: () => number };
  readonly #entries = new Map<string, Entry>();

  constructor(store: OAuthTokenStore, opts: OAuthTokenManagerOptions) {
    this.#store = store;
    this.#opts = { refreshBeforeMs: 120_000, now: Date.now, ...opts };
  }

  /** The token source a connector gets in its context (ConnectorContext.oauth). */
  source(conn: OAuthConnectionRef): OAuthTokenSource {
    return {
      getAccessToken: (signal) => this.getAccessToken(conn, signal),
      invalidate: (token) => this.invalidate(conn.id, token),
      extras: async (signal) => {
        await this.getAccessToken(conn, signal);
        return { ...(this.#entry(conn.id).current?.extras ?? {}) };
      },
    };
  }

  /**
   * An access token of the connection that expires in more than `refreshBeforeMs` (or, right
   * after a refresh, the new token whatever its lifetime). Throws ConnectorError as
   * OAuthTokenSource.getAccessToken says.
   */
  async getAccessToken(conn: OAuthConnectionRef, signal?: AbortSignal): Promise<string> {
    const e = this.#entry(conn.id);
    for (let attempt = 0; ; attempt++) {
      if (e.current && this.#fresh(e.current, e)) return e.current.accessToken!;
      if (attempt >= 3) {
        throw new ConnectorError('oauth_token_refused', 'The provider refused every access token obtained for this connection.', {
          classification: 'retryable',
          hint: 'The access tokens were refused right after being issued; the request will be retried.',
        });
      }
      e.pending ??= this.#obtain(conn, e, signal).finally(() => (e.pending = undefined));
      const got = await e.pending;
      if (got.accessToken && this.#acceptable(got, e)) return got.accessToken;
    }
  }

  /** Marks `token` as refused by the remote (a 401): the next get obtains another one. */
  invalidate(connectionId: string, token: string): void {
    const e = this.#entry(connectionId);
    e.refused.add(token);
    if (e.refused.size > 8) e.refused.delete(e.refused.values().next().value!);
  }

  /** Forgets what this process cached for a connection (its tokens were replaced by a new flow). */
  forget(connectionId: string): void {
    this.#entries.delete(connectionId);
  }

  #entry(id: string): Entry {
    let e = this.#entries.get(id);
    if (!e) this.#entries.set(id, (e = { refused: new Set() }));
    return e;
  }

  /** Not refused and not expired. */
  #acceptable(t: StoredOAuthTokens, e: Entry): boolean {
    return !!t.accessToken && !e.refused.has(t.accessToken) && (t.expiresAt === undefined || t.expiresAt > this.#opts.now());
  }

  /** Acceptable and not about to expire. */
  #fresh(t: StoredOAuthTokens, e: Entry): boolean {
    return this.#acceptable(t, e) && (t.expiresAt === undefined || t.expiresAt - this.#opts.now() > this.#opts.refreshBeforeMs);
  }

  async #obtain(conn: OAuthConnectionRef, e: Entry, signal?: AbortSignal): Promise<StoredOAuthTokens> {
    // Another process may have refreshed already: a plain read first, no lock.
    const seen = await this.#store.read(conn.id);
    if (this.#fresh(seen, e)) return (e.current = seen);
    let failedRefreshToken: string | undefined;
    try {
      const got = await this.#store.withRefreshLock(
        conn.id,
        async (cur) => {
          // Refreshed by someone else while we waited for the lock: use theirs.
          if (cur.accessToken && cur.accessToken !== seen.accessToken && this.#acceptable(cur, e)) return { value: cur };
          if (this.#fresh(cur, e)) return { value: cur };
          if (!cur.refreshToken) {
            failedRefreshToken = undefined;
            throw reauthorizationRequired(cur.accessToken ? 'the access token expired or was refused, and the connection holds no refresh token' : 'the connection holds no OAuth tokens');
          }
          failedRefreshToken = cur.refreshToken;
          const r = await refreshAccessToken(conn.client(), cur.refreshToken, this.#opts.transport, signal);
          const next: StoredOAuthTokens = { accessToken: r.accessToken, refreshToken: r.refreshToken ?? cur.refreshToken, expiresAt: r.expiresAt, extras: { ...cur.extras, ...r.extras } };
          return { save: { ...r, refreshToken: next.refreshToken }, value: next };
        },
        signal,
      );
      return (e.current = got);
    } catch (err) {
      if (err instanceof ConnectorError && err.code === 'reauthorization_required') {
        await this.#store.markReauthorizationRequired(conn.id, failedRefreshToken, err.message).catch(() => {});
      }
      throw err;
    }
  }
}

/** A token source for a static token (private-app tokens, API keys): never refreshed. */
export function staticTokenSource(token: string): OAuthTokenSource {
  return { getAccessToken: async () => token, invalidate: () => {}, extras: async () => ({}) };
}

/**
 * The bearer token source of a connector: the OAuth source when the connection is OAuth-connected,
 * else the static token in `secrets[secretName]`. Throws ConnectorError fatal `missing_secret`
 * when there is neither.
 */
export function bearerTokenSource(oauth: OAuthTokenSource | undefined, secrets: ResolvedSecrets, secretName: string = OAUTH_SECRET.accessToken): OAuthTokenSource & { refreshable: boolean } {
  if (oauth) return { ...oauth, refreshable: true };
  const token = secrets[secretName];
  if (!token) {
    return {
      refreshable: false,
      getAccessToken: async () => {
        throw new ConnectorError('missing_secret', `The connection has no "${secretName}" secret and is not connected through OAuth.`, {
          classification: 'fatal',
          hint: `Set secrets.${secretName} (a private-app / static token), or connect it with POST /v1/connections/{ref}/oauth/start.`,
        });
      },
      invalidate: () => {},
      extras: async () => ({}),
    };
  }
  return { ...staticTokenSource(token), refreshable: false };
}
