import * as oauth from 'oauth4webapi';
import { ConnectorError } from '../../errors.ts';
import { httpRequest, parseRetryAfter } from '../../lib/http-client.ts';
import type { OAuthProviderSpec, ResolvedSecrets } from '../types.ts';

// The OAuth 2.0 protocol steps Backhaul takes as a client (RFC 6749 authorization code grant with
// RFC 7636 PKCE, and the refresh-token grant), on oauth4webapi. Its requests go through our own
// HTTP client (customFetch), so token endpoints get the same outbound address guard, deadline and
// response-size limit as every destination request: token URLs can be set per connection.

/** Client credentials and endpoints of one connection's provider, resolved from type, config and secrets. */
export interface OAuthClient {
  provider: string;
  authorizeUrl: string;
  tokenUrl: string;
  clientId: string;
  clientSecret: string;
  scopes: string[];
  optionalScopesParam?: string;
  optionalScopes?: string[];
  clientAuth: 'body' | 'header';
  authorizeParams?: Record<string, string>;
  keepFields?: Record<string, string>;
  defaultTokenLifetimeSeconds?: number;
}

/** Client id/secret per provider name from Backhaul's configuration (BACKHAUL_<NAME>_CLIENT_ID/_SECRET). */
export type OAuthClientSettings = Record<string, { clientId?: string; clientSecret?: string; authorizeUrl?: string; tokenUrl?: string }>;

export interface OAuthTransport {
  timeoutMs: number;
  maxResponseBytes: number;
  denyPrivateNetworks: boolean;
}

export const DEFAULT_OAUTH_TRANSPORT: Omit<OAuthTransport, 'denyPrivateNetworks'> = { timeoutMs: 30_000, maxResponseBytes: 1_048_576 };

/** A token endpoint's answer. `expiresAt` in epoch ms (absent: no lifetime given and no default). */
export interface OAuthTokenResponse {
  accessToken: string;
  refreshToken?: string;
  expiresAt?: number;
  /** Kept non-token fields, by secret name (OAuthProviderSpec.keepFields). */
  extras: Record<string, string>;
}

/** JSON Schema of the `oauth` member a type with OAuth support puts in its configSchema. */
export const oauthConfigSchema = {
  type: 'object',
  additionalProperties: false,
  description: 'OAuth client settings of this connection (all optional: the defaults are the provider\'s endpoints and the client configured for Backhaul)',
  properties: {
    clientId: { type: 'string', minLength: 1, maxLength: 500, description: 'Overrides BACKHAUL_<TYPE>_CLIENT_ID (the secret `clientSecret` then overrides the client secret)' },
    authorizeUrl: { type: 'string', format: 'uri', pattern: '^https?://', maxLength: 2000, description: 'Authorization endpoint (sandboxes, custom domains, tests)' },
    tokenUrl: { type: 'string', format: 'uri', pattern: '^https?://', maxLength: 2000, description: 'Token endpoint' },
    scopes: { type: 'array', maxItems: 100, items: { type: 'string', minLength: 1, maxLength: 200 }, description: 'Scopes asked for (default: the type\'s)' },
  },
} as const;

export const envNameOf = (provider: string, what: 'CLIENT_ID' | 'CLIENT_SECRET' | 'AUTHORIZE_URL' | 'TOKEN_URL') => `BACKHAUL_${provider.toUpperCase().replace(/[^A-Z0-9]/g, '_')}_${what}`;

/** `host` equals one of the trusted hosts, or is a subdomain of one given as `.example.com`. */
function trustedHost(url: string, trusted: string[]): boolean {
  let host: string;
  try {
    const u = new URL(url);
    if (u.protocol !== 'https:' && !trusted.includes(u.hostname)) return false;
    host = u.hostname.toLowerCase();
  } catch {
    return false;
  }
  return trusted.some((t) => (t.startsWith('.') ? host.endsWith(t.toLowerCase()) : host === t.toLowerCase()));
}

/**
 * Resolves a connection's OAuth client: endpoints and scopes from the type (or
 * BACKHAUL_<NAME>_AUTHORIZE_URL / _TOKEN_URL), overridden by the connection's config
 * (`config.oauth` or the type's `overrides`); the client from the connection
 * (`config.oauth.clientId` with the `clientSecret` secret) or else from
 * BACKHAUL_<NAME>_CLIENT_ID / BACKHAUL_<NAME>_CLIENT_SECRET.
 *
 * Backhaul's own client secret is sent only to a trusted token endpoint: the configured one, or a
 * host the type trusts (OAuthProviderSpec.trustedTokenHosts, e.g. Salesforce sandboxes). A
 * connection that points the token URL elsewhere must bring its own client; otherwise a key with
 * write scope could have Backhaul's client secret sent to a server of its choosing.
 * Throws ConnectorError fatal `oauth_client_not_configured` or `oauth_token_url_not_trusted` (422).
 */
export function resolveOAuthClient(spec: OAuthProviderSpec, config: Record<string, unknown>, secrets: ResolvedSecrets, settings: OAuthClientSettings): OAuthClient {
  const o = spec.overrides ? spec.overrides(config) : ((config.oauth ?? {}) as { authorizeUrl?: string; tokenUrl?: string; scopes?: string[]; clientId?: string });
  const fromConfig = settings[spec.name] ?? {};
  const defaultTokenUrl = fromConfig.tokenUrl ?? spec.tokenUrl;
  const tokenUrl = o.tokenUrl ?? defaultTokenUrl;
  if (!o.clientId && tokenUrl !== defaultTokenUrl && !trustedHost(tokenUrl, [new URL(defaultTokenUrl).hostname, ...(spec.trustedTokenHosts ?? [])])) {
    throw new ConnectorError('oauth_token_url_not_trusted', `The connection's token URL (${new URL(tokenUrl).origin}) is not ${spec.name}'s, so Backhaul's own OAuth client cannot be used with it.`, {
      classification: 'fatal',
      status: 422,
      hint: `Bring the connection's own OAuth client (config.oauth.clientId and the clientSecret secret), or set ${envNameOf(spec.name, 'TOKEN_URL')} for the whole instance.`,
    });
  }
  // A connection's own client id goes with its own secret, never with Backhaul's.
  const clientId = o.clientId ?? fromConfig.clientId;
  const clientSecret = o.clientId ? secrets.clientSecret : fromConfig.clientSecret;
  if (!clientId || !clientSecret) {
    throw new ConnectorError('oauth_client_not_configured', `No OAuth client is configured for ${spec.name}: ${!clientId ? 'the client id' : 'the client secret'} is missing.`, {
      classification: 'fatal',
      status: 422,
      hint: `Set ${envNameOf(spec.name, 'CLIENT_ID')} and ${envNameOf(spec.name, 'CLIENT_SECRET')} in Backhaul's environment, or config.oauth.clientId and the clientSecret secret on the connection.`,
    });
  }
  return {
    provider: spec.name,
    authorizeUrl: o.authorizeUrl ?? fromConfig.authorizeUrl ?? spec.authorizeUrl,
    tokenUrl,
    clientId,
    clientSecret,
    scopes: o.scopes ?? spec.scopes,
    optionalScopesParam: spec.optionalScopesParam,
    optionalScopes: spec.optionalScopes,
    clientAuth: spec.clientAuth,
    authorizeParams: spec.authorizeParams,
    keepFields: spec.keepFields,
    defaultTokenLifetimeSeconds: spec.defaultTokenLifetimeSeconds,
  };
}

/** A PKCE pair (RFC 7636, method S256) and a state value, all from a CSPRNG. */
export async function newAuthorizationRequest(): Promise<{ state: string; codeVerifier: string; codeChallenge: string }> {
  const codeVerifier = oauth.generateRandomCodeVerifier();
  return { state: oauth.generateRandomState(), codeVerifier, codeChallenge: await oauth.calculatePKCECodeChallenge(codeVerifier) };
}

/** The URL the user's browser opens to grant access. */
export function authorizationUrl(c: OAuthClient, p: { state: string; codeChallenge: string; redirectUri: string }): string {
  const url = new URL(c.authorizeUrl);
  url.searchParams.set('response_type', 'code');
  url.searchParams.set('client_id', c.clientId);
  url.searchParams.set('redirect_uri', p.redirectUri);
  if (c.scopes.length) url.searchParams.set('scope', c.scopes.join(' '));
  if (c.optionalScopesParam && c.optionalScopes?.length) url.searchParams.set(c.optionalScopesParam, c.optionalScopes.join(' '));
  url.searchParams.set('state', p.state);
  url.searchParams.set('code_challenge', p.codeChallenge);
  url.searchParams.set('code_challenge_method', 'S256');
  for (const [k, v] of Object.entries(c.authorizeParams ?? {})) url.searchParams.set(k, v);
  return url.toString();
}

function server(c: OAuthClient): oauth.AuthorizationServer {
  return { issuer: new URL(c.tokenUrl).origin, authorization_endpoint: c.authorizeUrl, token_endpoint: c.tokenUrl };
}

function requestOptions(c: OAuthClient, t: OAuthTransport, signal?: AbortSignal): oauth.TokenEndpointRequestOptions {
  return {
    signal,
    // Plain http only when the connection points the token URL at it (local fakes, private gateways).
    [oauth.allowInsecureRequests]: c.tokenUrl.startsWith('http:'),
    [oauth.customFetch]: async (url: string, init: { method: string; headers: Record<string, string>; body?: unknown; signal?: AbortSignal }) => {
      const res = await httpRequest({
        method: init.method,
        url,
        headers: init.headers,
        body: init.body === undefined ? undefined : String(init.body),
        timeoutMs: t.timeoutMs,
        maxResponseBytes: t.maxResponseBytes,
        denyPrivateNetworks: t.denyPrivateNetworks,
        signal: init.signal ?? signal,
      });
      return new Response(res.status === 204 || res.status === 304 ? null : new Uint8Array(res.body), { status: res.status, headers: res.headers });
    },
  };
}

function clientAuth(c: OAuthClient): oauth.ClientAuth {
  return c.clientAuth === 'header' ? oauth.ClientSecretBasic(c.clientSecret) : oauth.ClientSecretPost(c.clientSecret);
}

/**
 * Exchanges an authorization code (with its PKCE verifier) for tokens. Throws ConnectorError:
 * `oauth_code_rejected` (fatal: the code is invalid, used or expired), `oauth_client_invalid`,
 * or retryable `token_endpoint_unavailable`.
 */
export async function exchangeCode(c: OAuthClient, p: { code: string; codeVerifier: string; redirectUri: string }, t: OAuthTransport, signal?: AbortSignal): Promise<OAuthTokenResponse> {
  return tokenCall(c, 'authorization_code', signal, async () => {
    // The state was checked against the control database by the caller.
    const params = oauth.validateAuthResponse(server(c), { client_id: c.clientId }, new URLSearchParams({ code: p.code }), oauth.skipStateCheck);
    const res = await oauth.authorizationCodeGrantRequest(server(c), { client_id: c.clientId }, clientAuth(c), params, p.redirectUri, p.codeVerifier, requestOptions(c, t, signal));
    await refuseErrors(c, res, 'authorization_code');
    return oauth.processAuthorizationCodeResponse(server(c), { client_id: c.clientId }, res);
  });
}

/**
 * Uses a refresh token (RFC 6749 §6). Throws ConnectorError: fatal `reauthorization_required`
 * when the provider refuses the refresh token (revoked, expired, already rotated away), fatal
 * `oauth_client_invalid` when it refuses the client, retryable `token_endpoint_unavailable` on
 * 429/5xx/network failures.
 */
export async function refreshAccessToken(c: OAuthClient, refreshToken: string, t: OAuthTransport, signal?: AbortSignal): Promise<OAuthTokenResponse> {
  return tokenCall(c, 'refresh_token', signal, async () => {
    const res = await oauth.refreshTokenGrantRequest(server(c), { client_id: c.clientId }, clientAuth(c), refreshToken, requestOptions(c, t, signal));
    await refuseErrors(c, res, 'refresh_token');
    return oauth.processRefreshTokenResponse(server(c), { client_id: c.clientId }, res);
  });
}

async function tokenCall(c: OAuthClient, grant: string, signal: AbortSignal | undefined, call: () => Promise<oauth.TokenEndpointResponse>): Promise<OAuthTokenResponse> {
  let json: oauth.TokenEndpointResponse;
  try {
    json = await call();
  } catch (e) {
    if (e instanceof ConnectorError) throw e;
    // A 200 that is not a token response (oauth4webapi's checks): the endpoint is misconfigured.
    throw new ConnectorError('oauth_invalid_response', `The ${c.provider} token endpoint (${c.tokenUrl}) gave an answer that is not an OAuth token response (${grant}): ${(e as Error).message}`, {
      classification: 'fatal',
      hint: 'Check the token URL of the connection (config.oauth.tokenUrl).',
      cause: e,
    });
  }
  void signal;
  const lifetime = typeof json.expires_in === 'number' && json.expires_in > 0 ? json.expires_in : c.defaultTokenLifetimeSeconds;
  const extras: Record<string, string> = {};
  for (const [field, secret] of Object.entries(c.keepFields ?? {})) {
    const v = json[field];
    if (typeof v === 'string' || typeof v === 'number') extras[secret] = String(v);
  }
  return {
    accessToken: json.access_token,
    ...(typeof json.refresh_token === 'string' && json.refresh_token ? { refreshToken: json.refresh_token } : {}),
    ...(lifetime ? { expiresAt: Date.now() + lifetime * 1000 } : {}),
    extras,
  };
}

/** Classifies a non-200 answer of the token endpoint before oauth4webapi parses it. */
async function refuseErrors(c: OAuthClient, res: Response, grant: 'authorization_code' | 'refresh_token'): Promise<void> {
  if (res.status === 200) return;
  const text = await res.clone().text().catch(() => '');
  let body: Record<string, unknown> = {};
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: the status decides
  }
  // RFC 6749 §5.2 `error`, or a provider's own shape (HubSpot: {"status":"BAD_REFRESH_TOKEN","message"}).
  const code = String(body.error ?? body.status ?? body.subCategory ?? body.category ?? '');
  const why = [code, body.error_description ?? body.message].filter(Boolean).join(': ') || text.slice(0, 300) || `HTTP ${res.status}`;
  const where = `The ${c.provider} token endpoint (${c.tokenUrl}) answered ${res.status}`;
  if (res.status === 429 || res.status >= 500) {
    throw new ConnectorError('token_endpoint_unavailable', `${where}: ${why}`, {
      classification: 'retryable',
      retryAfterMs: parseRetryAfter(res.headers.get('retry-after') ?? undefined),
      hint: 'The authorization server is unavailable or throttling; the request will be retried.',
    });
  }
  // Salesforce answers `invalid_client_id` for an unknown consumer key (Salesforce Help, "OAuth 2.0 Web Server Flow").
  if (code === 'invalid_client' || code === 'unauthorized_client' || code === 'invalid_client_id') {
    throw new ConnectorError('oauth_client_invalid', `${where}: ${why}`, {
      classification: 'fatal',
      hint: `The provider refused Backhaul's OAuth client: check ${envNameOf(c.provider, 'CLIENT_ID')} / ${envNameOf(c.provider, 'CLIENT_SECRET')} (or the connection's config.oauth.clientId and clientSecret secret).`,
    });
  }
  if (grant === 'refresh_token' && res.status >= 400 && res.status < 500) {
    throw reauthorizationRequired(`${where} to the refresh token: ${why}`);
  }
  throw new ConnectorError('oauth_code_rejected', `${where}: ${why}`, {
    classification: 'fatal',
    hint: 'The authorization code was refused (expired, already used, or issued for another redirect URI): start the OAuth flow again.',
  });
}

/** The refresh token cannot be used any more: the user must connect again. */
export function reauthorizationRequired(detail: string): ConnectorError {
  return new ConnectorError('reauthorization_required', `The connection's OAuth authorization is no longer valid: ${detail}`, {
    classification: 'fatal',
    hint: 'Reconnect: POST /v1/connections/{ref}/oauth/start and complete the flow in a browser (or set a new access token).',
  });
}
