import type { Redactor } from '../lib/redact.ts';

// The two interfaces every connector implements. The engine, the REST discovery routes and
// GraphQL only ever see these; a connector's own code lives in sources/ or destinations/.

/** Common column types; each database's own types map onto these. */
export type ColumnType = 'string' | 'integer' | 'decimal' | 'boolean' | 'timestamp' | 'date' | 'json';

export interface Column {
  name: string;
  type: ColumnType;
  /** The database's own type name, for display (e.g. `int8`, `varchar(255)`). */
  nativeType: string;
}

/**
 * A source row. Integers beyond Number.MAX_SAFE_INTEGER and all decimals arrive as strings so
 * that no precision is lost; timestamps as ISO-8601 strings; dates as YYYY-MM-DD; json as parsed values.
 */
export type Row = Record<string, unknown>;

export interface StreamOptions {
  /** Rows per yielded batch (default 1000). */
  batchSize?: number;
  signal?: AbortSignal;
  /**
   * Also compute each row's source fingerprint (see FingerprintSession) into FINGERPRINT_COLUMN,
   * when the source can for this model (`fingerprintMethod` says which; rows lack the column otherwise).
   */
  fingerprint?: { columns: Column[] };
}

/** Something a connection test found that works but should be changed (e.g. a superuser login). */
export interface ConnectionWarning {
  /** Stable: `superuser`, `can_write`. */
  code: string;
  message: string;
  hint?: string;
}

/** What a successful connection test reports beyond "it works". */
export interface ConnectionTestReport {
  warnings?: ConnectionWarning[];
}

/** How a preview was cut to stay within its byte budget (absent when nothing was cut). */
export interface PreviewTruncation {
  /** Values cut to `maxValueBytes` (or to what was left of the total); each now ends with "…". */
  values: number;
  /** Rows the query had (within the limit) that were left out because the total reached `maxTotalBytes`. */
  rowsOmitted: boolean;
  maxValueBytes: number;
  maxTotalBytes: number;
}

export interface PreviewResult {
  columns: Column[];
  rows: Row[];
  truncated?: PreviewTruncation;
}

export interface SourceConnector {
  /** Throws ConnectorError with an actionable code (dns_not_found, connection_refused, auth_failed, …). */
  test(): Promise<ConnectionTestReport | void>;
  /** Column names and types of a query's result, without reading its rows. */
  columns(sql: string): Promise<Column[]>;
  /**
   * First `limit` rows, in a read-only transaction with a statement timeout; each value and the
   * whole result are bounded in bytes (see PreviewTruncation).
   */
  preview(sql: string, limit: number, opts?: { timeoutMs?: number }): Promise<PreviewResult>;
  /**
   * All rows through a server-side cursor: memory stays flat whatever the size of the result.
   * Every wait is bounded: a lost or silent source fails with `source_unavailable` (retryable);
   * an aborted `signal` cancels the server-side query and fails with `cancelled` at once.
   */
  stream(sql: string, opts?: StreamOptions): AsyncIterable<Row[]>;
  /**
   * Incremental reads (SQL sources that can fingerprint a row in the database): opens one
   * read-only, consistent-snapshot transaction over the model, or answers undefined when this
   * model cannot be read that way (its primary key's type has no exact text form, duplicate
   * column names, …): the engine then reads every row with `stream`.
   */
  fingerprints?(sql: string, opts: FingerprintOptions): Promise<FingerprintSession | undefined>;
  /** The fingerprint function `stream` uses for these columns when asked, or undefined when it cannot. */
  fingerprintMethod?(columns: Column[]): string | undefined;
  close(): Promise<void>;
}

/** Name of the column carrying a row's source fingerprint in rows a FingerprintSession returns. */
export const FINGERPRINT_COLUMN = '__bh_fp';

/**
 * Thrown by a FingerprintSession's `keys` when a row's key turns out to have no exact text form
 * (a binary value): the engine then reads every row with `stream` instead.
 */
export class FingerprintUnsupported extends Error {}

export interface FingerprintOptions {
  primaryKey: string;
  /** The model's columns (from `columns`), whose values make the fingerprint. */
  columns: Column[];
  signal?: AbortSignal;
}

/**
 * A model read as (primary key, fingerprint) pairs first, then full rows by key, all in one
 * read-only transaction with one snapshot of the data (PostgreSQL REPEATABLE READ; MySQL/MariaDB
 * WITH CONSISTENT SNAPSHOT), so the keys and the rows agree. A fingerprint is a hash of the whole
 * source row computed by the database (PostgreSQL: hashtextextended of the row's text form;
 * MySQL/MariaDB: MD5 of every column QUOTE()d): it changes whenever any value of the row does.
 */
export interface FingerprintSession {
  /** Which fingerprint function (part of the evaluation version: another function re-evaluates every row). */
  readonly method: string;
  /**
   * `fetch` may be called while `keys` is still being read: the rows come from a second
   * connection that shares the transaction's snapshot (PostgreSQL's exported snapshots). Otherwise
   * `fetch` is called once the scan is over. (A PostgreSQL session whose second connection failed
   * to open still answers a fetch sent during the scan: it waits for the scan's end.)
   */
  readonly fetchesDuringScan?: boolean;
  /**
   * Every row's (primary key, `prefix` + fingerprint) as PostgreSQL COPY text lines `pk\tfp\n`
   * (a NULL key as `\N`), in chunks; the key in the form the engine records it (String(value)).
   * `prefix` matches /^[0-9a-z]*:?$/ (the engine's evaluation version).
   */
  keys(prefix: string, signal?: AbortSignal): AsyncIterable<string | Buffer>;
  /**
   * The rows of these primary keys (the same strings `keys` gave), each with its fingerprint in
   * FINGERPRINT_COLUMN. May return rows of other keys too (a case-insensitive collation): the
   * caller keeps those it asked for.
   */
  fetch(keys: string[], signal?: AbortSignal): Promise<Row[]>;
  close(): Promise<void>;
}

export type WriteOperation = 'insert' | 'update' | 'upsert' | 'delete';
export type SyncMode = 'insert' | 'update' | 'upsert' | 'mirror';

export interface DestinationObject {
  name: string;
  label?: string;
}

export interface DestinationField {
  name: string;
  type: ColumnType;
  required: boolean;
  /** The field identifies a record (unique / primary key): usable as a match key. */
  identifier: boolean;
  /**
   * How the destination compares values of this field when it matches records (e.g. Salesforce
   * and HubSpot compare emails case-insensitively). Absent means `exact`.
   */
  equality?: 'exact' | 'case_insensitive';
  /** The only values the destination accepts (e.g. a Salesforce restricted picklist), when it says. */
  allowedValues?: string[];
}

export interface DestinationCapabilities {
  operations: WriteOperation[];
  modes: SyncMode[];
  maxBatchSize: number;
  /**
   * Whether `lookup` may be used (mappings may use `{ lookup: … }`). Absent: the connector looks
   * up when it implements `lookup`; `false`: not on this connection (e.g. an HTTP connection
   * without lookups configured). In the catalog, `true` means the type can.
   */
  lookup?: boolean;
  /** Distinct values one `lookup` call accepts (the resolver splits larger sets; default 100). */
  maxLookupBatchSize?: number;
  supportsDelete: boolean;
  /** A safe default rate when the sync sets none. */
  defaultMaxRequestsPerSecond?: number;
  /**
   * The destination has a bulk (asynchronous job) path, e.g. Salesforce Bulk API 2.0. When a run
   * plans at least `threshold` rows of one operation (or the sync's own threshold), the engine may
   * send batches of up to `maxBatchSize` rows with `WriteRequest.bulkThreshold` set; the connector
   * sends a batch through its bulk path when it holds at least that many rows.
   */
  bulk?: { threshold: number; maxBatchSize: number };
}

export interface WriteRow {
  /** The model's primary key for this row (stable across runs), as a string. */
  primaryKey: string;
  /** The mapped payload: destination field → value. For deletes, may hold only the match field. */
  payload: Record<string, unknown>;
  /**
   * The payload as JSON text, exactly what `stringifyJson(payload)` writes, when the engine has it
   * (it stages payloads as text): a connector that sends the payload unchanged may embed this
   * instead of serialising `payload` again. The engine then parses `payload` only if it is read.
   */
  payloadJson?: string;
  /**
   * The destination's id of the record this row claims, from the sync's snapshot, when known
   * (Salesforce `Id`, HubSpot `id`). Updates and deletes address the record by it.
   */
  recordId?: string;
}

/**
 * Durable key → value storage for one write, backed by the engine (the run row), for connectors
 * whose writes outlive a process (a Salesforce bulk job): `set` must be durable when it resolves,
 * so that a worker killed mid-write resumes the same remote job instead of starting another.
 */
export interface WriteCheckpoint {
  get(key: string): Promise<string | undefined>;
  set(key: string, value: string): Promise<void>;
}

export interface LookupRequest {
  object: string;
  /** The destination field compared with `values`. */
  matchField: string;
  /** The destination field whose value is returned for each match (e.g. `Id`). */
  resultField: string;
  /** Distinct values to resolve. */
  values: string[];
  /** Compare case-insensitively (e.g. emails). */
  caseInsensitive?: boolean;
  signal?: AbortSignal;
}

export interface WriteRequest {
  object: string;
  operation: WriteOperation;
  /** The destination field that identifies a record (the sync's match key). */
  matchField: string;
  rows: WriteRow[];
  signal?: AbortSignal;
  /** Where a connector with long-running remote jobs records them (see WriteCheckpoint). */
  checkpoint?: WriteCheckpoint;
  /** Batches of at least this many rows go through the connector's bulk path (see DestinationCapabilities.bulk). */
  bulkThreshold?: number;
}

export type RowResult =
  | { status: 'succeeded'; externalId?: string }
  | { status: 'rejected'; code: string; message: string; retryable: boolean };

/** Request/response of one destination call, kept for the row debugger (auth redacted). */
export interface WireExchange {
  request: { method: string; url: string; headers: Record<string, string>; body?: string };
  response?: { status: number; headers: Record<string, string>; body?: string };
  durationMs: number;
  /** Indexes (in WriteRequest.rows) of the rows this request carried. */
  rowIndexes?: number[];
}

export interface WriteResult {
  /** Exactly one result per input row, in the input order. */
  results: RowResult[];
  exchanges?: WireExchange[];
  /**
   * Set when some rows came back `rejected` with `retryable: true` because the destination
   * throttled or failed part-way through a batch whose other rows were already written (so the
   * batch could not simply be thrown back): how long the remote asked us to wait, if it said.
   */
  retryAfterMs?: number;
}

export interface DestinationConnector {
  test(): Promise<void>;
  objects(): Promise<DestinationObject[]>;
  fields(object: string): Promise<DestinationField[]>;
  capabilities(): DestinationCapabilities;
  /**
   * Writes one batch. Returns one result per row. Throws ConnectorError with classification
   * `retryable` (429/5xx/network/timeout, with retryAfterMs when the remote said), `fatal`
   * (credentials, missing object, bad config), or BatchRejectedError when the destination
   * refused the whole request because of its content (the engine then bisects).
   */
  write(req: WriteRequest): Promise<WriteResult>;
  /**
   * Resolves values of `matchField` to records, batched. The map has an entry per requested value
   * (as given) listing every match, so the engine can refuse ambiguous ones; an empty list is no match.
   */
  lookup?(req: LookupRequest): Promise<Map<string, { id?: string; value: unknown }[]>>;
  close(): Promise<void>;
  /**
   * Redacts this connection's secrets (every encoding, and credentials derived at run time such
   * as an OAuth access token) from text the engine stores or sends. A connector's own results,
   * errors and exchanges are already redacted; this is for what the engine composes from them.
   */
  readonly redactor?: Redactor;
}

/** One record matching a lookup value: its id in the destination (when it has one) and its result field. */
export interface LookupMatch {
  id?: string;
  value: unknown;
}

/** How a lookup value is compared: trimmed and lower-cased when caseInsensitive. */
export function normaliseLookupKey(value: string, caseInsensitive: boolean | undefined): string {
  return caseInsensitive ? value.trim().toLowerCase() : value;
}

export type ConnectorRole = 'source' | 'destination';

/** Decrypted secrets, with `{ env: NAME }` references already resolved. */
export type ResolvedSecrets = Record<string, string>;

export interface ConnectorContext {
  /** Refuse private/loopback addresses (BACKHAUL_DENY_PRIVATE_NETWORKS). Link-local/metadata are always refused. */
  denyPrivateNetworks: boolean;
  /**
   * The connection's OAuth access tokens, when its type declares `oauth` and the connection was
   * connected through the OAuth flow (it holds a refresh token). Absent for static tokens.
   */
  oauth?: OAuthTokenSource;
}

/**
 * Access tokens of one OAuth-connected connection (src/connectors/oauth/token-manager.ts).
 * `getAccessToken` answers a token valid for a while yet, refreshing it first when it expires
 * soon; after a 401, call `invalidate(token)` with the refused token and get again (one refresh
 * per connection at a time across all processes). Throws ConnectorError: fatal
 * `reauthorization_required` when the refresh token is revoked or expired (the user must
 * reconnect), retryable `token_endpoint_unavailable` when the provider is down.
 */
export interface OAuthTokenSource {
  getAccessToken(signal?: AbortSignal): Promise<string>;
  invalidate(token: string): void;
  /**
   * Non-token fields the provider returned with the token and the type asked to keep
   * (OAuthProviderSpec.keepFields, e.g. Salesforce `instance_url`), as of the last token read.
   */
  extras(signal?: AbortSignal): Promise<Record<string, string>>;
}

/** What a connector type needs for the OAuth 2.0 authorization-code flow (with PKCE). */
export interface OAuthProviderSpec {
  /**
   * Names the client credentials in Backhaul's configuration: BACKHAUL_<NAME>_CLIENT_ID and
   * BACKHAUL_<NAME>_CLIENT_SECRET (upper-cased), e.g. `hubspot`.
   */
  name: string;
  /** Default authorization endpoint (a connection may override it in `config.oauth.authorizeUrl`). */
  authorizeUrl: string;
  /** Default token endpoint (a connection may override it in `config.oauth.tokenUrl`). */
  tokenUrl: string;
  /** Scopes asked for by default (a connection may override them in `config.oauth.scopes`). */
  scopes: string[];
  /** Name of the authorize-URL parameter for optional scopes, when the provider has one (HubSpot `optional_scope`). */
  optionalScopesParam?: string;
  optionalScopes?: string[];
  /** How the client authenticates at the token endpoint: form fields (`body`) or HTTP Basic (`header`). */
  clientAuth: 'body' | 'header';
  /** Extra parameters of the authorization URL. */
  authorizeParams?: Record<string, string>;
  /**
   * Token-response fields to keep, mapped to the secret that holds them (e.g. `{ instance_url:
   * 'instanceUrl' }`); the type must declare those secrets.
   */
  keepFields?: Record<string, string>;
  /** Lifetime assumed when a token response has no `expires_in` (seconds; absent: valid until a 401). */
  defaultTokenLifetimeSeconds?: number;
  /**
   * Token-endpoint hosts besides the default's that may receive Backhaul's own client secret when
   * a connection overrides the token URL (`test.salesforce.com`, or `.my.salesforce.com` for
   * every subdomain). Any other override needs the connection's own client.
   */
  trustedTokenHosts?: string[];
  /** Overrides from a connection's config (e.g. a Salesforce sandbox's login host); default reads `config.oauth`. */
  overrides?: (config: any) => { authorizeUrl?: string; tokenUrl?: string; scopes?: string[]; clientId?: string };
}

export interface ConnectorType {
  type: string;
  label: string;
  roles: ConnectorRole[];
  /** JSON Schema of `config` (non-secret settings). additionalProperties: false. */
  configSchema: Record<string, unknown>;
  /** Names of the secrets this type accepts, with whether each is required. */
  secrets: { name: string; required: boolean; description: string }[];
  /**
   * JSON pointers into `config` of the settings that decide where the secrets are sent (a host, a
   * port). Changing one requires sending the secrets again. Config properties with
   * `format: "uri"` in configSchema count without being listed.
   */
  secretTargets?: string[];
  capabilities?: DestinationCapabilities;
  /** The type can be connected through the OAuth flow (POST /v1/connections/{ref}/oauth/start). */
  oauth?: OAuthProviderSpec;
  openSource?: (config: any, secrets: ResolvedSecrets, ctx: ConnectorContext) => SourceConnector;
  openDestination?: (config: any, secrets: ResolvedSecrets, ctx: ConnectorContext) => DestinationConnector;
}
