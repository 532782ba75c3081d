import { ConnectorError } from '../../errors.ts';
import { httpRequest, parseRetryAfter } from '../../lib/http-client.ts';
import type { ResolvedSecrets } from '../types.ts';

export interface HttpAuthConfig {
  type: 'none' | 'bearer' | 'basic' | 'header' | 'oauth2_client_credentials';
  username?: string;
  headerName?: string;
  tokenUrl?: string;
  clientId?: string;
  scope?: string;
  /** How the client authenticates to the token endpoint: HTTP Basic (RFC 6749 default) or form fields. */
  clientAuth?: 'basic' | 'body';
}

/**
 * JSON Schema of the `auth` member of the HTTP and GraphQL API destinations' config (one
 * definition for both: they authenticate through this module alike).
 */
export const httpAuthConfigSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['type'],
  properties: {
    type: { type: 'string', enum: ['none', 'bearer', 'basic', 'header', 'oauth2_client_credentials'] },
    /** basic: the user name (password is the `password` secret). */
    username: { type: 'string', maxLength: 500 },
    /** header: the header name (value is the `headerValue` secret). */
    headerName: { type: 'string', maxLength: 200 },
    /** oauth2_client_credentials (secret: `clientSecret`). */
    tokenUrl: { type: 'string', format: 'uri', pattern: '^https?://', maxLength: 2000 },
    clientId: { type: 'string', maxLength: 500 },
    scope: { type: 'string', maxLength: 2000 },
    /** oauth2: client authentication at the token endpoint, HTTP Basic (RFC 6749 default) or form fields. */
    clientAuth: { type: 'string', enum: ['basic', 'body'], default: 'basic' },
  },
  default: { type: 'none' },
};

/** The secrets `auth` reads (ConnectorType.secrets of the HTTP and GraphQL API destinations). */
export const HTTP_AUTH_SECRET_SPECS = [
  { name: 'token', required: false, description: 'Bearer token (auth.type = bearer)' },
  { name: 'password', required: false, description: 'Basic auth password (auth.type = basic)' },
  { name: 'headerValue', required: false, description: 'Value of the custom auth header (auth.type = header)' },
  { name: 'clientSecret', required: false, description: 'OAuth2 client secret (auth.type = oauth2_client_credentials)' },
];

export interface AuthTransport {
  timeoutMs: number;
  maxResponseBytes: number;
  denyPrivateNetworks: boolean;
}

function missingSecret(name: string, type: string): ConnectorError {
  return new ConnectorError('missing_secret', `Auth type "${type}" needs the "${name}" secret, which is not set.`, {
    classification: 'fatal',
    hint: `Set secrets.${name} on the connection.`,
  });
}

const formEncode = (s: string) => encodeURIComponent(s).replace(/%20/g, '+');

/**
 * Produces the auth headers of a request. OAuth2 client-credentials tokens are cached until
 * shortly before they expire, fetched once for concurrent callers, and dropped on a 401 so the
 * next call fetches a fresh one.
 */
export class HttpAuth {
  readonly #auth: HttpAuthConfig;
  readonly #secrets: ResolvedSecrets;
  readonly #transport: AuthTransport;
  #token?: { value: string; refreshAt: number };
  #pending?: Promise<string>;

  constructor(auth: HttpAuthConfig | undefined, secrets: ResolvedSecrets, transport: AuthTransport) {
    this.#auth = auth ?? { type: 'none' };
    this.#secrets = secrets;
    this.#transport = transport;
  }

  get isOAuth(): boolean {
    return this.#auth.type === 'oauth2_client_credentials';
  }

  /** Header names whose values are credentials (redacted from exchanges). */
  get secretHeaderNames(): string[] {
    return this.#auth.type === 'header' && this.#auth.headerName ? [this.#auth.headerName.toLowerCase()] : [];
  }

  /** Secret values, and the tokens derived from them, for redaction. */
  get secretValues(): string[] {
    return [...Object.values(this.#secrets), ...(this.#token ? [this.#token.value] : [])].filter((v) => v && v.length >= 4);
  }

  #secret(name: string): string {
    const v = this.#secrets[name];
    if (!v) throw missingSecret(name, this.#auth.type);
    return v;
  }

  async headers(): Promise<Record<string, string>> {
    const a = this.#auth;
    switch (a.type) {
      case 'bearer':
        return { authorization: `Bearer ${this.#secret('token')}` };
      case 'basic':
        return { authorization: `Basic ${Buffer.from(`${a.username ?? ''}:${this.#secret('password')}`).toString('base64')}` };
      case 'header':
        if (!a.headerName) throw new ConnectorError('invalid_config', 'auth.headerName is required for auth type "header".', { classification: 'fatal', status: 400 });
        return { [a.headerName]: this.#secret('headerValue') };
      case 'oauth2_client_credentials':
        return { authorization: `Bearer ${await this.token()}` };
      default:
        return {};
    }
  }

  /** Forget the cached token (after a 401). */
  invalidate(): void {
    this.#token = undefined;
  }

  async token(): Promise<string> {
    if (this.#token && Date.now() < this.#token.refreshAt) return this.#token.value;
    this.#pending ??= this.#fetchToken().finally(() => (this.#pending = undefined));
    return this.#pending;
  }

  async #fetchToken(): Promise<string> {
    const a = this.#auth;
    if (!a.tokenUrl || !a.clientId) {
      throw new ConnectorError('invalid_config', 'auth.tokenUrl and auth.clientId are required for OAuth2 client credentials.', { classification: 'fatal', status: 400 });
    }
    const secret = this.#secret('clientSecret');
    const form: Record<string, string> = { grant_type: 'client_credentials' };
    if (a.scope) form.scope = a.scope;
    const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' };
    if (a.clientAuth === 'body') {
      form.client_id = a.clientId;
      form.client_secret = secret;
    } else {
      headers.authorization = `Basic ${Buffer.from(`${formEncode(a.clientId)}:${formEncode(secret)}`).toString('base64')}`;
    }
    const body = Object.entries(form).map(([k, v]) => `${k}=${formEncode(v)}`).join('&');
    const res = await httpRequest({ method: 'POST', url: a.tokenUrl, headers, body, ...this.#transport });
    let json: Record<string, unknown> = {};
    try {
      json = JSON.parse(res.body.toString('utf8'));
    } catch {
      // non-JSON error pages are handled below
    }
    if (res.status === 429 || res.status >= 500) {
      throw new ConnectorError('token_endpoint_unavailable', `The OAuth token endpoint answered ${res.status}.`, {
        classification: 'retryable',
        retryAfterMs: parseRetryAfter(res.headers['retry-after']),
        hint: 'The authorization server is unavailable; the request will be retried.',
      });
    }
    if (res.status < 200 || res.status >= 300 || typeof json.access_token !== 'string') {
      const why = [json.error, json.error_description].filter(Boolean).join(': ') || res.body.toString('utf8').slice(0, 300);
      throw new ConnectorError('auth_failed', `The OAuth token endpoint refused the client credentials (${res.status}): ${why}`, {
        classification: 'fatal',
        hint: 'Check auth.clientId, the clientSecret secret, auth.scope and auth.tokenUrl.',
      });
    }
    const ttlMs = Number(json.expires_in) > 0 ? Number(json.expires_in) * 1000 : 3_600_000;
    // Refresh shortly before expiry: 30 s early, or 10% early for short-lived tokens.
    this.#token = { value: json.access_token, refreshAt: Date.now() + ttlMs - Math.min(30_000, ttlMs * 0.1) };
    return json.access_token;
  }
}
