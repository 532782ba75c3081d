import { ConnectorError } from '../../errors.ts';
import { httpRequest, parseRetryAfter, type HttpResponse } from '../../lib/http-client.ts';
import type { OAuthTokenSource, ResolvedSecrets, WireExchange } from '../types.ts';
import { MAX_ROW_MESSAGE, exchange, parseJson } from './http-response.ts';
import { secretRedactor, type Redactor } from '../../lib/redact.ts';

// Salesforce REST transport: the session (access token + instance URL), one retry after
// INVALID_SESSION_ID, and the classification of request-level failures. Used by the REST
// (sObject Collections, describe, SOQL) and Bulk API 2.0 paths alike.

/** An access token and the instance it is valid for (`instance_url` of the OAuth token response). */
export interface SalesforceSession {
  accessToken: string;
  instanceUrl: string;
}

/**
 * Where the connector gets its session: `oauthTokenSource` (the shared OAuth token manager) for a
 * connection connected through the OAuth flow, else `staticTokenSource` (a token given as a secret).
 */
export interface SalesforceTokenSource {
  /** The current session (may refresh before expiry). */
  getToken(): Promise<SalesforceSession>;
  /**
   * Salesforce refused `rejected` (401 INVALID_SESSION_ID): return a fresh session, or throw a
   * fatal ConnectorError (`reauthorization_required` / `auth_failed`) when none can be had.
   */
  onUnauthorized(rejected: SalesforceSession): Promise<SalesforceSession>;
}

export interface SalesforceTransportConfig {
  instanceUrl?: string;
  /** REST API version, `vNN.N` (default v62.0). */
  apiVersion?: string;
  timeoutMs?: number;
  maxResponseBytes?: number;
  /** How long to wait after REQUEST_LIMIT_EXCEEDED on the org's rolling 24-hour allocation (default 10 min). */
  requestLimitBackoffMs?: number;
}

export const DEFAULT_API_VERSION = 'v62.0';

/**
 * The session of an OAuth-connected connection, from the shared token manager
 * (src/connectors/oauth/token-manager.ts: one refresh per connection at a time across every
 * process). The instance is the token response's `instance_url` (kept as the `instanceUrl`
 * secret), else config.instanceUrl. Salesforce's token responses carry no `expires_in` (the
 * session timeout is the org's setting), so a token is used until Salesforce answers 401
 * INVALID_SESSION_ID; `onUnauthorized` then marks it refused and gets another one (the manager
 * refreshes it, or takes the one another process just obtained).
 * Source: Salesforce Help, "OAuth 2.0 Web Server Flow for Web App Integration" and "OAuth 2.0
 * Refresh Token Flow for Renewed Sessions". Throws as OAuthTokenSource.getAccessToken, and fatal
 * `invalid_config` when no instance URL is known.
 */
export function oauthTokenSource(config: SalesforceTransportConfig, src: OAuthTokenSource): SalesforceTokenSource {
  const getToken = async (): Promise<SalesforceSession> => {
    const accessToken = await src.getAccessToken();
    const instanceUrl = (await src.extras()).instanceUrl || config.instanceUrl;
    if (!instanceUrl) throw noInstanceUrl();
    return { accessToken, instanceUrl };
  };
  return {
    getToken,
    async onUnauthorized(rejected) {
      src.invalidate(rejected.accessToken);
      return getToken();
    },
  };
}

function noInstanceUrl(): ConnectorError {
  return new ConnectorError('invalid_config', 'The Salesforce connection has no instance URL.', {
    classification: 'fatal',
    status: 400,
    hint: 'Set config.instanceUrl (e.g. https://mycompany.my.salesforce.com) or connect through OAuth, whose token names the instance.',
  });
}

/** A token given as the `accessToken` secret; the instance from the `instanceUrl` secret (token response) or config. */
export function staticTokenSource(config: SalesforceTransportConfig, secrets: ResolvedSecrets): SalesforceTokenSource {
  return {
    async getToken() {
      const accessToken = secrets.accessToken;
      const instanceUrl = secrets.instanceUrl || config.instanceUrl;
      if (!accessToken) {
        throw new ConnectorError('missing_secret', 'The Salesforce connection has no access token (secret "accessToken").', {
          classification: 'fatal',
          hint: 'Connect the connection through OAuth, or set secrets.accessToken (and config.instanceUrl).',
        });
      }
      if (!instanceUrl) throw noInstanceUrl();
      return { accessToken, instanceUrl };
    },
    async onUnauthorized() {
      throw new ConnectorError('auth_failed', 'Salesforce refused the access token (INVALID_SESSION_ID: the session expired or was revoked).', {
        classification: 'fatal',
        hint: 'A static token cannot be refreshed: set a new accessToken secret, or connect the connection through OAuth.',
      });
    },
  };
}

/** Salesforce's REST error body: `[{ message, errorCode, fields? }]`. */
export interface SalesforceApiError {
  message: string;
  errorCode: string;
  fields?: string[];
}

export function apiErrors(body: Buffer): SalesforceApiError[] {
  const j = parseJson(body);
  const list = Array.isArray(j) ? j : j && typeof j === 'object' ? [j] : [];
  return list
    .filter((e): e is Record<string, unknown> => !!e && typeof e === 'object')
    .map((e) => ({
      message: String(e.message ?? ''),
      errorCode: String(e.errorCode ?? e.statusCode ?? ''),
      ...(Array.isArray(e.fields) ? { fields: e.fields.map(String) } : {}),
    }));
}

export function describeErrors(status: number, body: Buffer): string {
  const errs = apiErrors(body);
  const s = errs.length ? errs.map((e) => (e.errorCode ? `${e.errorCode}: ${e.message}` : e.message)).join('; ') : body.toString('utf8').trim() || `HTTP ${status}`;
  return s.slice(0, MAX_ROW_MESSAGE);
}

export interface SfRequest {
  method: string;
  /** Path under `/services/data/{version}` (starting with `/`), or an absolute path on the instance (`/services/…`). */
  path: string;
  body?: string;
  contentType?: string;
  accept?: string;
  maxResponseBytes?: number;
  rowIndexes?: number[];
  signal?: AbortSignal;
}

/**
 * One Salesforce API client per connection. Every request carries the session's bearer token;
 * a 401 gets one `onUnauthorized` (refresh) and one retry. Exchanges are recorded, auth redacted.
 */
export class SalesforceClient {
  readonly config: SalesforceTransportConfig;
  readonly apiVersion: string;
  readonly #tokens: SalesforceTokenSource;
  readonly #denyPrivateNetworks: boolean;
  readonly #redact: Redactor;
  #session?: SalesforceSession;
  #refreshing?: Promise<SalesforceSession>;
  readonly #secretValues: string[];

  constructor(config: SalesforceTransportConfig, secrets: ResolvedSecrets, tokens: SalesforceTokenSource, denyPrivateNetworks: boolean) {
    this.config = config;
    this.apiVersion = config.apiVersion ?? DEFAULT_API_VERSION;
    this.#tokens = tokens;
    this.#denyPrivateNetworks = denyPrivateNetworks;
    this.#secretValues = Object.values(secrets).filter((v) => v && v.length >= 8);
    this.#redact = secretRedactor(() => (this.#session ? [...this.#secretValues, this.#session.accessToken] : this.#secretValues));
  }

  /** `{instanceUrl}/services/data/{version}{path}` (or `{instanceUrl}{path}` for absolute `/services/…` paths). */
  url(session: SalesforceSession, path: string): string {
    const base = session.instanceUrl.replace(/\/+$/, '');
    if (path.startsWith('/services/')) return `${base}${path}`;
    if (path.startsWith('services/')) return `${base}/${path}`;
    return `${base}/services/data/${this.apiVersion}${path}`;
  }

  async #currentSession(): Promise<SalesforceSession> {
    this.#session ??= await this.#tokens.getToken();
    return this.#session;
  }

  /** Sends one request; returns any HTTP answer except a 401 that survives the refresh (thrown fatal). */
  async send(r: SfRequest, exchanges: WireExchange[]): Promise<HttpResponse> {
    let session = await this.#currentSession();
    for (let attempt = 0; ; attempt++) {
      const url = this.url(session, r.path);
      const headers: Record<string, string> = {
        authorization: `Bearer ${session.accessToken}`,
        accept: r.accept ?? 'application/json',
        ...(r.body !== undefined ? { 'content-type': r.contentType ?? 'application/json' } : {}),
      };
      const started = Date.now();
      let res: HttpResponse;
      try {
        res = await httpRequest({
          method: r.method,
          url,
          headers,
          body: r.body,
          signal: r.signal,
          timeoutMs: this.config.timeoutMs ?? 60_000,
          maxResponseBytes: r.maxResponseBytes ?? this.config.maxResponseBytes ?? 10_485_760,
          denyPrivateNetworks: this.#denyPrivateNetworks,
        });
      } catch (e) {
        exchanges.push(exchange(this.#redact, { method: r.method, url, headers, body: r.body }, undefined, Date.now() - started, r.rowIndexes ?? []));
        throw e;
      }
      exchanges.push(exchange(this.#redact, { method: r.method, url, headers, body: r.body }, res, res.durationMs, r.rowIndexes ?? []));
      if (res.status !== 401) return res;
      if (attempt > 0) {
        throw new ConnectorError('auth_failed', `Salesforce refused the session again after a refresh: ${describeErrors(401, res.body)}`, {
          classification: 'fatal',
          hint: 'Reconnect the Salesforce connection (its OAuth grant may have been revoked), or set a valid accessToken secret.',
        });
      }
      // INVALID_SESSION_ID (expired/revoked token): refresh once, then retry.
      session = await this.#refresh(session);
    }
  }

  /** One refresh for all requests in flight that saw the same rejected token. */
  async #refresh(rejected: SalesforceSession): Promise<SalesforceSession> {
    if (this.#session && this.#session.accessToken !== rejected.accessToken) return this.#session;
    this.#refreshing ??= this.#tokens
      .onUnauthorized(rejected)
      .then((s) => (this.#session = s))
      .finally(() => (this.#refreshing = undefined));
    return this.#refreshing;
  }

  /**
   * The request-level failure of a response, if any: REQUEST_LIMIT_EXCEEDED (retryable after a
   * long wait: the org's allocation is a rolling 24 h, and concurrent long requests clear in
   * minutes), 429/5xx (retryable, Retry-After honoured), 403 (fatal), 3xx (fatal).
   * Source: REST API Developer Guide, "Status Codes and Error Responses"; Limits Quick Reference,
   * "API Request Limits and Allocations".
   */
  requestError(res: HttpResponse, what: string): ConnectorError | undefined {
    const s = res.status;
    const errs = s >= 400 ? apiErrors(res.body) : [];
    const limit = errs.find((e) => e.errorCode === 'REQUEST_LIMIT_EXCEEDED');
    if (limit) {
      const concurrent = /concurrent/i.test(limit.message);
      return new ConnectorError('rate_limited', `Salesforce refused ${what}: REQUEST_LIMIT_EXCEEDED: ${limit.message}`, {
        classification: 'retryable',
        retryAfterMs: parseRetryAfter(res.headers['retry-after']) ?? (concurrent ? 60_000 : this.config.requestLimitBackoffMs ?? 600_000),
        hint: concurrent
          ? 'Too many long-running requests are open on the org at once; the batch will be retried in a minute.'
          : `The org used its API request allocation (${res.headers['sforce-limit-info'] ?? 'rolling 24 hours'}); the batch will be retried after a long pause. Raise the allocation or lower the sync's frequency.`,
      });
    }
    if (s === 429 || s === 408 || s >= 500) {
      return new ConnectorError(s === 429 ? 'rate_limited' : 'destination_unavailable', `Salesforce answered ${s} to ${what}: ${describeErrors(s, res.body)}`, {
        classification: 'retryable',
        retryAfterMs: parseRetryAfter(res.headers['retry-after']),
        hint: 'Salesforce is busy or unavailable; the request will be retried.',
      });
    }
    if (s === 403) {
      return new ConnectorError('permission_denied', `Salesforce refused ${what} (403): ${describeErrors(s, res.body)}`, {
        classification: 'fatal',
        hint: 'The connected user lacks a permission (API Enabled, object or field access) this sync needs.',
      });
    }
    if (s >= 300 && s < 400) {
      return new ConnectorError('unexpected_redirect', `Salesforce answered ${s} to ${what} (redirect to ${res.headers.location ?? '?'}); redirects are not followed.`, {
        classification: 'fatal',
        hint: 'Check the instance URL (use the My Domain URL the OAuth token names).',
      });
    }
    return undefined;
  }
}
