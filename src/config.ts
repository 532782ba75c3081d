import { resolve } from 'node:path';

// Every setting Backhaul reads from the environment, parsed and validated in one place.
// A bad value stops start-up with one line per problem, naming the variable.

export interface Config {
  databaseUrl: string | undefined;
  dataDir: string;
  embeddedPgPort: number;
  host: string;
  port: number;
  encryptionKey: string | undefined;
  bootstrapApiKey: string | undefined;
  corsOrigins: string[];
  denyPrivateNetworks: boolean;
  logLevel: string;
  production: boolean;
  bodyLimitBytes: number;
  workerConcurrency: number;
  recordRetentionDays: number;
  /** A run's overall deadline (seconds). */
  runTimeoutSeconds: number;
  /** Memory for comparison tables kept between a sync's runs (MB; 0: none). */
  fingerprintCacheMb: number;
  publicUrl: string | undefined;
  shutdownTimeoutMs: number;
  webhookTimeoutMs: number;
  debuggerRetentionDays: number;
  metricsToken: string | undefined;
  /** `backhaul worker`'s metrics/health listener port (BACKHAUL_METRICS_PORT); unset: none. */
  metricsPort: number | undefined;
  /** Level of fastify's per-request log lines (BACKHAUL_REQUEST_LOG_LEVEL). */
  requestLogLevel: string;
  /**
   * OAuth client per provider name, from BACKHAUL_<NAME>_CLIENT_ID / _CLIENT_SECRET, and the
   * provider's endpoints when overridden for the whole instance (_AUTHORIZE_URL / _TOKEN_URL).
   */
  oauthClients: Record<string, { clientId?: string; clientSecret?: string; authorizeUrl?: string; tokenUrl?: string }>;
  /** Origins a `returnUrl` of the OAuth flow may point at. */
  oauthReturnOrigins: string[];
  /** The OAuth redirect URI registered with providers (default: BACKHAUL_PUBLIC_URL + /v1/oauth/callback). */
  oauthRedirectUrl: string | undefined;
  /** GET /metrics without a token; unset: public only when HOST is a loopback address. */
  metricsPublic: boolean | undefined;
}

export class ConfigError extends Error {
  readonly problems: string[];
  constructor(problems: string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.problems = problems;
  }
}

type Env = Record<string, string | undefined>;

export function loadConfig(env: Env = process.env): Config {
  const problems: string[] = [];

  const str = (name: string): string | undefined => {
    const v = env[name];
    return v === undefined || v.trim() === '' ? undefined : v.trim();
  };
  const int = (name: string, def: number, min: number, max: number): number => {
    const raw = str(name);
    if (raw === undefined) return def;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min || n > max) {
      problems.push(`${name}=${JSON.stringify(raw)}: expected an integer from ${min} to ${max}`);
      return def;
    }
    return n;
  };
  const bool = (name: string, def: boolean): boolean => {
    const raw = str(name)?.toLowerCase();
    if (raw === undefined) return def;
    if (['1', 'true', 'yes', 'on'].includes(raw)) return true;
    if (['0', 'false', 'no', 'off'].includes(raw)) return false;
    problems.push(`${name}=${JSON.stringify(raw)}: expected true or false`);
    return def;
  };

  const databaseUrl = str('DATABASE_URL');
  if (databaseUrl === undefined && bool('BACKHAUL_REQUIRE_DATABASE_URL', false)) {
    problems.push('DATABASE_URL is required here (BACKHAUL_REQUIRE_DATABASE_URL=true, as in the container image): the embedded database is for local use.');
  }
  if (databaseUrl !== undefined && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    problems.push('DATABASE_URL: expected a postgres:// or postgresql:// URL');
  }
  const logLevel = str('LOG_LEVEL') ?? 'info';
  if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(logLevel)) {
    problems.push(`LOG_LEVEL=${JSON.stringify(logLevel)}: expected one of fatal, error, warn, info, debug, trace, silent`);
  }
  const requestLogLevel = str('BACKHAUL_REQUEST_LOG_LEVEL') ?? 'info';
  if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(requestLogLevel)) {
    problems.push(`BACKHAUL_REQUEST_LOG_LEVEL=${JSON.stringify(requestLogLevel)}: expected one of fatal, error, warn, info, debug, trace, silent`);
  }
  const bootstrapApiKey = str('BACKHAUL_BOOTSTRAP_API_KEY');
  if (bootstrapApiKey !== undefined && !/^bh_[A-Za-z0-9_-]{20,200}$/.test(bootstrapApiKey)) {
    problems.push('BACKHAUL_BOOTSTRAP_API_KEY: expected "bh_" followed by at least 20 characters of [A-Za-z0-9_-]');
  }
  const publicUrl = str('BACKHAUL_PUBLIC_URL');
  if (publicUrl !== undefined && !/^https?:\/\//.test(publicUrl)) {
    problems.push('BACKHAUL_PUBLIC_URL: expected an http:// or https:// URL');
  }
  const corsOrigins = (str('BACKHAUL_CORS_ORIGINS') ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const o of corsOrigins) {
    if (o !== '*' && !/^https?:\/\/[^/]+$/.test(o)) problems.push(`BACKHAUL_CORS_ORIGINS: "${o}" is not an origin like https://app.example.com`);
  }

  const oauthReturnOrigins = (str('BACKHAUL_OAUTH_RETURN_ORIGINS') ?? '')
    .split(',')
    .map((s) => s.trim().replace(/\/+$/, ''))
    .filter(Boolean);
  for (const o of oauthReturnOrigins) {
    if (!/^https?:\/\/[^/]+$/.test(o)) problems.push(`BACKHAUL_OAUTH_RETURN_ORIGINS: "${o}" is not an origin like https://app.example.com`);
  }
  const oauthRedirectUrl = str('BACKHAUL_OAUTH_REDIRECT_URL');
  if (oauthRedirectUrl !== undefined && !/^https?:\/\/[^?#]+$/.test(oauthRedirectUrl)) {
    problems.push('BACKHAUL_OAUTH_REDIRECT_URL: expected an http:// or https:// URL without query or fragment');
  }
  // Client credentials of OAuth providers, one pair per connector type that supports OAuth.
  const oauthClients: Config['oauthClients'] = {};
  const oauthKeys = { CLIENT_ID: 'clientId', CLIENT_SECRET: 'clientSecret', AUTHORIZE_URL: 'authorizeUrl', TOKEN_URL: 'tokenUrl' } as const;
  for (const name of Object.keys(env)) {
    const m = /^BACKHAUL_([A-Z0-9_]+?)_(CLIENT_ID|CLIENT_SECRET|AUTHORIZE_URL|TOKEN_URL)$/.exec(name);
    if (!m || m[1] === 'OAUTH') continue;
    const v = str(name);
    if (v === undefined) continue;
    if (m[2].endsWith('_URL') && !/^https?:\/\//.test(v)) {
      problems.push(`${name}: expected an http:// or https:// URL`);
      continue;
    }
    const provider = m[1].toLowerCase();
    oauthClients[provider] = { ...oauthClients[provider], [oauthKeys[m[2] as keyof typeof oauthKeys]]: v };
  }

  const config: Config = {
    databaseUrl,
    dataDir: resolve(str('BACKHAUL_DATA_DIR') ?? '.backhaul'),
    embeddedPgPort: int('BACKHAUL_EMBEDDED_PG_PORT', 0, 0, 65535),
    host: str('HOST') ?? '127.0.0.1',
    port: int('PORT', 3000, 0, 65535),
    encryptionKey: str('BACKHAUL_ENCRYPTION_KEY'),
    bootstrapApiKey,
    corsOrigins,
    denyPrivateNetworks: bool('BACKHAUL_DENY_PRIVATE_NETWORKS', false),
    logLevel,
    production: str('NODE_ENV') === 'production',
    bodyLimitBytes: int('BACKHAUL_BODY_LIMIT_BYTES', 1_048_576, 1024, 104_857_600),
    workerConcurrency: int('BACKHAUL_WORKER_CONCURRENCY', 4, 1, 64),
    recordRetentionDays: int('BACKHAUL_RECORD_RETENTION_DAYS', 30, 1, 3650),
    runTimeoutSeconds: int('BACKHAUL_RUN_TIMEOUT_SECONDS', 21_600, 10, 604_800),
    fingerprintCacheMb: int('BACKHAUL_FINGERPRINT_CACHE_MB', 128, 0, 65_536),
    publicUrl,
    shutdownTimeoutMs: int('BACKHAUL_SHUTDOWN_TIMEOUT_MS', 25_000, 0, 600_000),
    webhookTimeoutMs: int('BACKHAUL_WEBHOOK_TIMEOUT_MS', 10_000, 100, 60_000),
    debuggerRetentionDays: int('BACKHAUL_DEBUGGER_RETENTION_DAYS', 7, 0, 365),
    metricsToken: str('BACKHAUL_METRICS_TOKEN'),
    metricsPort: str('BACKHAUL_METRICS_PORT') === undefined ? undefined : int('BACKHAUL_METRICS_PORT', 0, 0, 65535),
    requestLogLevel,
    oauthClients,
    oauthReturnOrigins,
    oauthRedirectUrl,
    metricsPublic: str('BACKHAUL_METRICS_PUBLIC') === undefined ? undefined : bool('BACKHAUL_METRICS_PUBLIC', false),
  };
  if (problems.length > 0) throw new ConfigError(problems);
  return config;
}

/** The documented variables (README table and `backhaul --help`). */
export const CONFIG_DOCS: [string, string, string][] = [
  ['DATABASE_URL', '(embedded)', 'PostgreSQL control database. Unset: an embedded PostgreSQL starts in BACKHAUL_DATA_DIR.'],
  ['BACKHAUL_REQUIRE_DATABASE_URL', 'false', 'Refuse to start the embedded database (set in the container image).'],
  ['BACKHAUL_DATA_DIR', './.backhaul', 'Data directory of the embedded PostgreSQL (and its generated encryption key).'],
  ['BACKHAUL_EMBEDDED_PG_PORT', '0 (free port)', 'Port of the embedded PostgreSQL.'],
  ['HOST', '127.0.0.1', 'Address the API listens on.'],
  ['PORT', '3000', 'Port the API listens on.'],
  ['BACKHAUL_ENCRYPTION_KEY', '(generated with embedded DB)', '32-byte key (64 hex chars or base64) encrypting connection secrets. Required with DATABASE_URL.'],
  ['BACKHAUL_BOOTSTRAP_API_KEY', '(random, printed once)', 'The first owner API key (bh_…), for automation.'],
  ['BACKHAUL_CORS_ORIGINS', '(none)', 'Comma-separated origins allowed by CORS for REST and GraphQL.'],
  ['BACKHAUL_DENY_PRIVATE_NETWORKS', 'false', 'Refuse outbound requests to loopback and private addresses.'],
  ['BACKHAUL_BODY_LIMIT_BYTES', '1048576', 'Largest accepted request body.'],
  ['BACKHAUL_WORKER_CONCURRENCY', '4', 'Jobs a worker process runs at once.'],
  ['BACKHAUL_RECORD_RETENTION_DAYS', '30', 'How long run records are kept.'],
  ['BACKHAUL_RUN_TIMEOUT_SECONDS', '21600', 'A run\'s overall deadline: a run still going after it is stopped and fails as retryable (run_timeout), so no run holds a worker slot forever.'],
  ['BACKHAUL_FINGERPRINT_CACHE_MB', '128', 'Worker memory for the incremental comparison\'s tables kept between a sync\'s runs (about 70 MB per million records): a sync\'s next run on the same worker then skips loading its snapshot. 0 keeps none.'],
  ['BACKHAUL_PUBLIC_URL', '(http://HOST:PORT)', 'Base URL used in links sent to webhooks.'],
  ['BACKHAUL_SHUTDOWN_TIMEOUT_MS', '25000', 'Grace period on SIGTERM before in-flight work is abandoned.'],
  ['BACKHAUL_WEBHOOK_TIMEOUT_MS', '10000', 'Deadline of one webhook, callback or alert request (connect, send, read the answer).'],
  ['BACKHAUL_DEBUGGER_RETENTION_DAYS', '7', 'How long destination requests/responses are kept for the row debugger; 0 turns capture off.'],
  ['BACKHAUL_METRICS_TOKEN', '(none)', 'When set, GET /metrics requires "Authorization: Bearer <token>".'],
  ['BACKHAUL_METRICS_PUBLIC', '(true only when HOST is loopback)', 'Without a token, whether GET /metrics answers anyone (its labels name every workspace\'s syncs); otherwise it answers 403 metrics_not_public.'],
  ['BACKHAUL_METRICS_PORT', '(none)', '`backhaul worker` only: serve GET /metrics, /healthz and /readyz on this port of HOST (the API serves them on PORT).'],
  ['BACKHAUL_REQUEST_LOG_LEVEL', 'info', 'Level of the two log lines per HTTP request (debug or silent keeps them out of an info log).'],
  ['BACKHAUL_<TYPE>_CLIENT_ID / _CLIENT_SECRET', '(none)', 'OAuth client of a connector type, e.g. BACKHAUL_HUBSPOT_CLIENT_ID and BACKHAUL_HUBSPOT_CLIENT_SECRET (a connection may bring its own).'],
  ['BACKHAUL_<TYPE>_AUTHORIZE_URL / _TOKEN_URL', "(the provider's)", "The provider's OAuth endpoints for the whole instance (a proxy, a sandbox). Backhaul's client secret is sent only to this token URL or the provider's."],
  ['BACKHAUL_OAUTH_RETURN_ORIGINS', '(none)', 'Comma-separated origins that the OAuth flow may redirect to when it completes (returnUrl).'],
  ['BACKHAUL_OAUTH_REDIRECT_URL', '(BACKHAUL_PUBLIC_URL/v1/oauth/callback)', 'The OAuth redirect URI registered with the providers (it must reach GET /v1/oauth/callback).'],
  ['LOG_LEVEL', 'info', 'pino log level.'],
  ['NODE_ENV', '', '`production` disables GraphiQL and pretty errors.'],
];

/**
 * Whether HOST only accepts connections from this machine: `localhost`, 127.0.0.0/8 or ::1
 * (also written [::1] or as an IPv4-mapped ::ffff:127.x.y.z).
 */
export function isLoopbackHost(host: string): boolean {
  const h = host.trim().toLowerCase().replace(/^\[|\]$/g, '');
  if (h === 'localhost' || h === '::1' || h === '0:0:0:0:0:0:0:1') return true;
  const v4 = h.replace(/^::ffff:/, '');
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(v4);
}
