import { buildSchema, printSchema, type GraphQLSchema } from 'graphql';

// The GraphQL contract. `openapi/schema.graphql` is generated from this (npm run generate), so
// CI's drift check covers it. Enum values are the REST values verbatim (lowercase), so a status or
// mode reads the same in REST, GraphQL, webhooks and logs.
//
// Conventions:
// - Lists are Relay connections (`edges { cursor node }`, `pageInfo` with start/end cursors and
//   hasPrevious/NextPage, plus `nodes` as a shortcut), paged forward with `first` (1..200, default
//   50) and `after`; cursors are the REST API's opaque cursors. relay-compiler accepts
//   `@connection` on every one (test/graphql/relay.test.ts).
// - Resolvers are typed from this SDL (src/graphql/generated.ts, by graphql-codegen in
//   npm run generate; check:drift keeps it current).
// - `ref` arguments take an id or a slug, as REST paths do. Single lookups answer null when the
//   resource does not exist in the caller's workspace (REST's 404).
// - Writes take `expectedVersion` (REST's If-Match): a stale version fails with code
//   `version_mismatch`.
// - Errors carry REST's stable `code` in `extensions`, with `status` and, for validation, `errors`
//   (JSON pointers into the `input` argument).
export const typeDefs = /* GraphQL */ `
"""
Backhaul's GraphQL API: the same services, rules and error codes as the REST API (/v1).
Authenticate with "Authorization: Bearer bh_…" (WebSocket: connection_init payload {"authorization": "Bearer bh_…"}).
"""
schema {
  query: Query
  mutation: Mutation
  subscription: Subscription
}

"Any JSON value."
scalar JSON

"An ISO-8601 UTC timestamp, e.g. 2024-05-01T12:00:00.000Z."
scalar DateTime

"An object with a global id; its prefix names its type (conn_, mdl_, sync_, map_, run_, key_, aud_, ws_, wh_, whd_, ach_, alr_, seq_, seqrun_)."
interface Node {
  id: ID!
}

type PageInfo {
  hasNextPage: Boolean!
  "True when the page was asked \`after\` a cursor (pagination is forward only)."
  hasPreviousPage: Boolean!
  "The cursor of the first edge."
  startCursor: String
  "Pass as \`after\` to get the next page."
  endCursor: String
}

type DeletePayload {
  deletedId: ID!
}

# ---- Caller ------------------------------------------------------------------------------------

enum Scope {
  read
  write
  admin
}

"The API key making the request."
type Viewer {
  "Null for the system itself."
  keyId: ID
  scopes: [Scope!]!
  "Owner keys may create and list workspaces."
  owner: Boolean!
  workspace: Workspace!
}

type Workspace implements Node {
  id: ID!
  slug: String!
  name: String!
  createdAt: DateTime!
  updatedAt: DateTime!
}

type WorkspaceEdge {
  cursor: String!
  node: Workspace!
}

type WorkspaceConnection {
  edges: [WorkspaceEdge!]!
  nodes: [Workspace!]!
  pageInfo: PageInfo!
}

type ApiKey implements Node {
  id: ID!
  name: String!
  scopes: [Scope!]!
  "First characters of the token, to recognise it."
  prefix: String!
  owner: Boolean!
  createdAt: DateTime!
  lastUsedAt: DateTime
}

type ApiKeyEdge {
  cursor: String!
  node: ApiKey!
}

type ApiKeyConnection {
  edges: [ApiKeyEdge!]!
  nodes: [ApiKey!]!
  pageInfo: PageInfo!
}

type CreateApiKeyPayload {
  apiKey: ApiKey!
  "The bearer token, shown once: store it now."
  token: String!
}

type CreateWorkspacePayload {
  workspace: Workspace!
  "The new workspace's first admin key."
  apiKey: ApiKey!
  "Its token, shown once."
  token: String!
}

"Who changed what, when, from which key. Field names only, never values."
type AuditEvent implements Node {
  id: ID!
  action: String!
  resourceType: String!
  resourceId: String!
  changedFields: [String!]!
  actorKeyId: ID
  requestId: String
  createdAt: DateTime!
}

type AuditEventEdge {
  cursor: String!
  node: AuditEvent!
}

type AuditEventConnection {
  edges: [AuditEventEdge!]!
  nodes: [AuditEvent!]!
  pageInfo: PageInfo!
}

# ---- Connectors and connections ---------------------------------------------------------------

enum ConnectorRole {
  source
  destination
}

type ConnectorSecret {
  name: String!
  required: Boolean!
  description: String!
}

"How connections of a type are connected through OAuth (startConnectionOAuth)."
type ConnectorOAuth {
  "The provider's name (its client comes from BACKHAUL_<PROVIDER>_CLIENT_ID/_SECRET)."
  provider: String!
  "Default authorization endpoint (a connection may override it in config.oauth)."
  authorizeUrl: String!
  "Default token endpoint (a connection may override it in config.oauth)."
  tokenUrl: String!
  "Scopes asked for by default."
  scopes: [String!]!
}

"One connector type of the catalog."
type Connector {
  "Stable: ctr_ and the type."
  id: ID!
  type: String!
  label: String!
  roles: [ConnectorRole!]!
  "JSON Schema of a connection's config."
  configSchema: JSON!
  secrets: [ConnectorSecret!]!
  "Destination capabilities (modes, batch limits…), null for sources."
  capabilities: JSON
  "Null when connections of this type are not connected through OAuth."
  oauth: ConnectorOAuth
}

"A write-only secret, described without its value."
type SecretFingerprint {
  name: String!
  "Keyed HMAC of the value under the instance's key (never the value or its plain hash)."
  fingerprint: String!
  "When the value last changed."
  updatedAt: DateTime!
}


type ConnectorEdge {
  cursor: String!
  node: Connector!
}

"The connector catalog (one page: it is small)."
type ConnectorConnection {
  edges: [ConnectorEdge!]!
  nodes: [Connector!]!
  pageInfo: PageInfo!
}

"Stable: adding a value is a breaking change."
enum ConnectionAuthStatus {
  "The connection holds credentials (OAuth tokens from a completed flow, or a static token)."
  connected
  "No credentials yet: connect it with startConnectionOAuth (or set a token in its secrets)."
  not_connected
  "Its OAuth grant was revoked or expired: runs fail with code reauthorization_required until a new flow completes."
  reauthorization_required
}

"What startConnectionOAuth answers: the provider's consent page for a browser to open."
type StartConnectionOAuthPayload {
  "The provider's consent page, for a browser to open."
  authorizationUrl: String!
  "The flow must complete (the provider redirects to GET /v1/oauth/callback) before this."
  expiresAt: DateTime!
}

"A configured connector instance. Secrets are write-only: only their names and fingerprints are readable."
type Connection implements Node {
  id: ID!
  slug: String!
  name: String!
  type: String!
  roles: [ConnectorRole!]!
  config: JSON!
  secretNames: [String!]!
  "Per secret: a keyed fingerprint that changes exactly when its value does, and when it changed."
  secretFingerprints: [SecretFingerprint!]!
  "Types with OAuth (see Connector.oauth): whether the connection holds credentials, or must be connected again; null for other types."
  authStatus: ConnectionAuthStatus
  "With authStatus reauthorization_required: the provider's answer."
  authError: String
  createdAt: DateTime!
  updatedAt: DateTime!
  version: Int!
  "A destination's objects (reaches the remote system)."
  destinationObjects: [DestinationObject!]!
  "The fields of one destination object (reaches the remote system)."
  destinationFields(object: String!): [DestinationField!]!
}

type DestinationObject {
  name: String!
  label: String
}

type DestinationField {
  name: String!
  type: String!
  required: Boolean!
  identifier: Boolean!
  "How the destination compares values of this field when matching records: exact or case_insensitive."
  equality: String
  "The only values the destination accepts (e.g. a restricted picklist), when it says."
  allowedValues: [String!]
}

type ConnectionEdge {
  cursor: String!
  node: Connection!
}

type ConnectionConnection {
  edges: [ConnectionEdge!]!
  nodes: [Connection!]!
  pageInfo: PageInfo!
}

type ConnectionTestError {
  code: String!
  message: String!
  hint: String
}

type ConnectionTestResult {
  ok: Boolean!
  latencyMs: Int
  "Connected, but with something to fix (e.g. a superuser or write-capable login for a source)."
  warnings: [ConnectionTestError!]
  error: ConnectionTestError
}

type ReplaceConnectionPayload {
  "True when the slug did not exist and the connection was created."
  created: Boolean!
  connection: Connection!
}

# ---- Models -----------------------------------------------------------------------------------

type Column {
  name: String!
  type: String!
  nativeType: String!
}

type ModelPreview {
  columns: [Column!]!
  rows: [JSON!]!
  "Present when the preview was cut to its bounds (values per value and in total)."
  truncated: JSON
}

"A SQL query on a source connection plus the column that identifies a row."
type Model implements Node {
  id: ID!
  slug: String!
  name: String!
  connectionId: ID!
  connection: Connection!
  sql: String!
  primaryKey: String!
  createdAt: DateTime!
  updatedAt: DateTime!
  version: Int!
  "The columns of the query's result (asks the source, fetches no rows)."
  columns: [Column!]!
  "The query's first rows (runs the query on the source)."
  preview(limit: Int = 50, timeoutMs: Int): ModelPreview!
  "Syncs reading this model."
  syncs(first: Int, after: String, enabled: Boolean): SyncConnection!
}

type ModelEdge {
  cursor: String!
  node: Model!
}

type ModelConnection {
  edges: [ModelEdge!]!
  nodes: [Model!]!
  pageInfo: PageInfo!
}

type ReplaceModelPayload {
  created: Boolean!
  model: Model!
}

# ---- Syncs and mappings -----------------------------------------------------------------------

enum SyncMode {
  insert
  update
  upsert
  mirror
}

enum ScheduleType {
  manual
  interval
  cron
}

type MatchKey {
  sourceColumn: String!
  destinationField: String!
}

type ManualSchedule {
  type: ScheduleType!
}

type IntervalSchedule {
  type: ScheduleType!
  everySeconds: Int!
  "A time on the grid of slots (anchor + k × everySeconds); null: the sync's creation."
  anchor: DateTime
}

type CronSchedule {
  type: ScheduleType!
  expression: String!
  timezone: String!
}

union Schedule = ManualSchedule | IntervalSchedule | CronSchedule

type Delivery {
  batchSize: Int!
  concurrency: Int!
  maxRequestsPerSecond: Float
  maxRetries: Int!
}

type Alerts {
  channelIds: [ID!]!
  onFailure: Boolean!
  rowFailurePercent: Float
  maxDurationSeconds: Int
  consecutiveFailures: Int
}

"Limits checked before a run sends anything (deletion_guard, change_guard); null: no limit."
type ChangeThresholds {
  maxDeletes: Int
  maxDeletePercent: Float
  maxChanges: Int
  maxChangePercent: Float
  "Let a model that returns 0 rows delete every record the sync wrote (mirror)."
  allowEmptyModel: Boolean!
}

input ChangeThresholdsInput {
  maxDeletes: Int
  maxDeletePercent: Float
  maxChanges: Int
  maxChangePercent: Float
  allowEmptyModel: Boolean
}

"Model → destination object: mode, match key, schedule, delivery settings, alert rules."
type Sync implements Node {
  id: ID!
  slug: String!
  name: String!
  modelId: ID!
  model: Model!
  destinationId: ID!
  destination: Connection!
  object: String!
  mode: SyncMode!
  matchKey: MatchKey!
  schedule: Schedule!
  enabled: Boolean!
  delivery: Delivery!
  alerts: Alerts!
  changeThresholds: ChangeThresholds!
  "When the sync last started a new snapshot (its destination, object, match key or mode changed)."
  snapshotResetAt: DateTime
  createdAt: DateTime!
  updatedAt: DateTime!
  version: Int!
  "Every mapping of the sync (at most 1000), oldest first."
  mappings: [Mapping!]!
  "The newest run, whatever its status."
  lastRun: Run
  "Runs, newest first."
  runs(first: Int, after: String, status: RunStatus): RunConnection!
  "One row's outcomes across runs, newest first (by the model's primary key)."
  recordHistory(primaryKey: String!, first: Int, after: String): RunRecordList!
  "The sync's mappings as a connection, oldest first (all of them unless first is given: a sync has at most 1000)."
  mappingConnection(first: Int, after: String): MappingConnection!
}

type SyncEdge {
  cursor: String!
  node: Sync!
}

type SyncConnection {
  edges: [SyncEdge!]!
  nodes: [Sync!]!
  pageInfo: PageInfo!
}

type ReplaceSyncPayload {
  created: Boolean!
  sync: Sync!
}

type ColumnSource {
  column: String!
}

type StaticSource {
  static: JSON
}

type TemplateSource {
  template: String!
}

"What a lookup does when no destination record matches."
enum LookupOnMissing {
  "The row is invalid (lookup_not_found)."
  invalid
  "The field is left out of the row's payload."
  skip_field
}

"The value of resultField of the destination record whose matchField equals the row's sourceColumn; more than one matching record makes the row invalid (lookup_ambiguous)."
type Lookup {
  object: String!
  matchField: String!
  sourceColumn: String!
  resultField: String!
  "Compare case-insensitively and trimmed (e-mails); null: not set (false)."
  caseInsensitive: Boolean
  "No matching record; null: not set (invalid)."
  onMissing: LookupOnMissing
}

type LookupSource {
  lookup: Lookup!
}

union MappingSource = ColumnSource | StaticSource | TemplateSource | LookupSource

"One destination field of a sync and where its value comes from."
type Mapping implements Node {
  id: ID!
  syncId: ID!
  sync: Sync!
  destinationField: String!
  source: MappingSource!
  createdAt: DateTime!
  updatedAt: DateTime!
  version: Int!
}

# ---- Runs -------------------------------------------------------------------------------------

"Stable: adding a value is a breaking change."
enum RunStatus {
  queued
  running
  succeeded
  partially_succeeded
  failed
  cancelled
}

enum RunPhaseName {
  querying
  diffing
  delivering
  finalizing
}

"What a run did (or planned) with a row; none: nothing (an invalid row)."
enum RunRecordOperation {
  insert
  update
  delete
  none
}

enum RunTrigger {
  manual
  schedule
  api
}

type RunPhase {
  name: String!
  startedAt: DateTime!
  finishedAt: DateTime
}

type OperationCounts {
  insert: Int!
  update: Int!
  delete: Int!
}

type RunCounts {
  queried: Int!
  invalid: Int!
  planned: OperationCounts!
  succeeded: OperationCounts!
  rejected: OperationCounts!
}

type RunError {
  code: String!
  message: String!
  hint: String
  retryable: Boolean!
}

"An operation a dry run planned."
type PlannedOperation {
  primaryKey: String!
  operation: String!
  payload: JSON
  recordId: String
}

"One execution of a sync."
type Run implements Node {
  id: ID!
  syncId: ID!
  sync: Sync!
  status: RunStatus!
  "Null while queued."
  phase: RunPhaseName
  trigger: RunTrigger!
  fullResync: Boolean!
  "Planned and reported only: nothing was sent and the snapshot was left untouched."
  dryRun: Boolean!
  "The trigger allowed this run past the deletion guard."
  allowDeletions: Boolean!
  "Dry runs: up to 20 planned operations of each kind with the payloads they would send."
  sample: [PlannedOperation!]
  queuedAt: DateTime!
  startedAt: DateTime
  finishedAt: DateTime
  phases: [RunPhase!]!
  counts: RunCounts!
  error: RunError
  "The outcome of each row, by primary key."
  records(first: Int, after: String, status: RunRecordStatus, operation: RunRecordOperation, primaryKey: String, redelivered: Boolean): RunRecordList!
  "Every webhook delivery about this run (endpoints' and the trigger's callbackUrl), newest first."
  deliveries(first: Int, after: String): WebhookDeliveryConnection!
}

type RunEdge {
  cursor: String!
  node: Run!
}

type RunConnection {
  edges: [RunEdge!]!
  nodes: [Run!]!
  pageInfo: PageInfo!
}

type TriggerRunPayload {
  run: Run!
  "False when the sync already had a queued run: that run is returned."
  created: Boolean!
}

enum RunRecordStatus {
  succeeded
  rejected
  invalid
}

type RunRecordError {
  code: String!
  message: String!
}

type RunRecord {
  "Stable: the run, the primary key and the operation."
  id: ID!
  primaryKey: String!
  operation: RunRecordOperation!
  status: RunRecordStatus!
  error: RunRecordError
  "Requests that carried this row in this run, across its executions."
  attempts: Int!
  "The row may have reached the destination more than once in this run (sent by an execution that ended before recording it, then sent again)."
  redelivered: Boolean!
  "The destination's id of the record this row wrote, when it returned one."
  recordId: String
  runId: ID!
  createdAt: DateTime!
}

type RunRecordEdge {
  cursor: String!
  node: RunRecord!
}

"A connection of run records (by primary key and operation, or, in recordHistory, newest run first)."
type RunRecordList {
  edges: [RunRecordEdge!]!
  nodes: [RunRecord!]!
  pageInfo: PageInfo!
}

type MappingEdge {
  cursor: String!
  node: Mapping!
}

type MappingConnection {
  edges: [MappingEdge!]!
  nodes: [Mapping!]!
  pageInfo: PageInfo!
}

"A proposed mapping from a model column to a destination field."
type MappingSuggestion {
  destinationField: String!
  sourceColumn: String!
  "0 to 1."
  confidence: Float!
  reason: String!
}

type MappingSuggestions {
  suggestions: [MappingSuggestion!]!
  "The mappings added (only with apply: true); existing mappings are never changed."
  applied: [Mapping!]!
}

"""
A change of a run (status or phase), from PostgreSQL NOTIFY: it reaches subscribers on every instance.
The fields of the notification are always there; \`run\` loads the run as it is now (null if it is gone).
"""
type RunUpdate {
  "Stable for one state of one run: the run, its status and its phase."
  id: ID!
  runId: ID!
  syncId: ID!
  status: RunStatus!
  phase: RunPhaseName
  run: Run
}

# ---- Webhooks, callbacks and alerts -----------------------------------------------------------

"""
A subscription to Backhaul's events, signed with a secret (Standard Webhooks). The secret is never
readable: it is in the payload of createWebhookEndpoint and rotateWebhookSecret only (and of
replaceWebhookEndpoint when it creates the endpoint or changes its secret).
"""
type WebhookEndpoint implements Node {
  id: ID!
  slug: String!
  name: String!
  url: String!
  description: String
  "Event types delivered (run.started, run.completed, alert.raised, alert.resolved, sequence_run.completed); empty = all."
  events: [String!]!
  "Only events about these syncs; empty = all syncs."
  syncIds: [ID!]!
  enabled: Boolean!
  "Why Backhaul disabled the endpoint (e.g. too many failures); cleared when it is enabled again."
  disabledReason: String
  "While set, the previous secret still signs too (rotation grace period)."
  previousSecretExpiresAt: DateTime
  createdAt: DateTime!
  updatedAt: DateTime!
  version: Int!
  "Deliveries to this endpoint, newest first, each with its attempts."
  deliveries(first: Int, after: String, status: WebhookDeliveryStatus, eventType: String): WebhookDeliveryConnection!
}

type WebhookEndpointEdge {
  cursor: String!
  node: WebhookEndpoint!
}

type WebhookEndpointConnection {
  edges: [WebhookEndpointEdge!]!
  nodes: [WebhookEndpoint!]!
  pageInfo: PageInfo!
}

type CreateWebhookEndpointPayload {
  webhookEndpoint: WebhookEndpoint!
  "The signing secret (given or generated), shown once: store it now."
  secret: String!
}

type ReplaceWebhookEndpointPayload {
  "True when the slug did not exist and the endpoint was created."
  created: Boolean!
  webhookEndpoint: WebhookEndpoint!
  "Only when the endpoint was created or its secret changed: the new secret, shown once."
  secret: String
}

type RotateWebhookSecretPayload {
  webhookEndpoint: WebhookEndpoint!
  "The new signing secret, shown once; the previous one keeps signing until previousSecretExpiresAt."
  secret: String!
}

enum WebhookDeliveryStatus {
  pending
  succeeded
  failed
}

enum WebhookDeliveryTarget {
  "A webhook endpoint."
  endpoint
  "A trigger's callbackUrl."
  callback
}

type WebhookAttemptError {
  code: String!
  message: String!
}

type WebhookAttempt {
  attempt: Int!
  at: DateTime!
  "Null when no response came (network error, timeout)."
  statusCode: Int
  durationMs: Int!
  error: WebhookAttemptError
  "The start of the response body."
  responseExcerpt: String
}

"One message to one URL, with its attempts."
type WebhookDelivery implements Node {
  id: ID!
  "Null for a callbackUrl delivery."
  endpointId: ID
  endpoint: WebhookEndpoint
  target: WebhookDeliveryTarget!
  url: String!
  "The webhook-id header (the same across retries and redeliveries)."
  messageId: String!
  eventType: String!
  runId: ID
  status: WebhookDeliveryStatus!
  attempts: [WebhookAttempt!]!
  nextAttemptAt: DateTime
  "The delivery this one sends again."
  redeliveryOf: ID
  "The body sent (type, timestamp, data)."
  payload: JSON!
  createdAt: DateTime!
}

type WebhookDeliveryEdge {
  cursor: String!
  node: WebhookDelivery!
}

type WebhookDeliveryConnection {
  edges: [WebhookDeliveryEdge!]!
  nodes: [WebhookDelivery!]!
  pageInfo: PageInfo!
}

"The workspace's secret signing the run.completed sent to a trigger's callbackUrl. Never readable."
type CallbackSecret {
  configured: Boolean!
  rotatedAt: DateTime
  previousSecretExpiresAt: DateTime
}

type RotateCallbackSecretPayload {
  callbackSecret: CallbackSecret!
  "The new secret, shown once."
  secret: String!
}

enum AlertChannelType {
  slack
  pagerduty
  webhook
}

enum AlertSeverity {
  critical
  error
  warning
  info
}

"pagerduty: eventsUrl, severity; webhook: url; slack: none."
type AlertChannelConfig {
  eventsUrl: String
  severity: AlertSeverity
  url: String
}

"Where a sync's alerts go. Secrets are write-only: only their names are readable."
type AlertChannel implements Node {
  id: ID!
  slug: String!
  name: String!
  type: AlertChannelType!
  config: AlertChannelConfig!
  secretNames: [String!]!
  "Per secret: a keyed fingerprint that changes exactly when its value does, and when it changed."
  secretFingerprints: [SecretFingerprint!]!
  createdAt: DateTime!
  updatedAt: DateTime!
  version: Int!
}

type AlertChannelEdge {
  cursor: String!
  node: AlertChannel!
}

type AlertChannelConnection {
  edges: [AlertChannelEdge!]!
  nodes: [AlertChannel!]!
  pageInfo: PageInfo!
}

type ReplaceAlertChannelPayload {
  created: Boolean!
  alertChannel: AlertChannel!
}

type AlertChannelTestError {
  code: String!
  message: String!
  hint: String
}

type AlertChannelTestResult {
  ok: Boolean!
  latencyMs: Int
  "The channel's HTTP answer, when there was one."
  statusCode: Int
  error: AlertChannelTestError
}

enum AlertKind {
  run_failed
  row_failures
  slow_run
  consecutive_failures
}

enum AlertStatus {
  open
  resolved
}

"Raised by a sync's alert rules; at most one open per sync and kind, resolved by the first healthy run."
type Alert implements Node {
  id: ID!
  syncId: ID!
  sync: Sync!
  kind: AlertKind!
  status: AlertStatus!
  summary: String!
  openedRunId: ID!
  resolvedRunId: ID
  openedAt: DateTime!
  resolvedAt: DateTime
}

type AlertEdge {
  cursor: String!
  node: Alert!
}

type AlertConnection {
  edges: [AlertEdge!]!
  nodes: [Alert!]!
  pageInfo: PageInfo!
}

# ---- Inputs -----------------------------------------------------------------------------------

enum ListOrderField {
  createdAt
  name
  slug
  updatedAt
}

enum OrderDirection {
  asc
  desc
}

"Ordering of connections, models and syncs; cursors are tied to the ordering they were made for."
input ListOrder {
  field: ListOrderField! = createdAt
  direction: OrderDirection = asc
}

input CreateConnectionInput {
  slug: String!
  name: String!
  type: String!
  config: JSON!
  "Write-only. A value is a string, or {\\"env\\": \\"VAR\\"} to read it from Backhaul's environment."
  secrets: JSON
}

input UpdateConnectionInput {
  slug: String
  name: String
  "A JSON merge patch (RFC 7396) over the current config."
  config: JSON
  "Set secrets, or remove one with null."
  secrets: JSON
}

input ReplaceConnectionInput {
  slug: String
  name: String!
  type: String!
  config: JSON!
  "Replaces the whole set; omit to keep the current secrets."
  secrets: JSON
}

input StartConnectionOAuthInput {
  "Where the browser goes when the flow completes; its origin must be in BACKHAUL_OAUTH_RETURN_ORIGINS (else code return_url_not_allowed). Absent: a confirmation page."
  returnUrl: String
}

input CreateModelInput {
  slug: String!
  name: String!
  "Id or slug of a connection with the source role."
  connectionId: String!
  sql: String!
  primaryKey: String!
}

input UpdateModelInput {
  slug: String
  name: String
  connectionId: String
  sql: String
  primaryKey: String
}

input ReplaceModelInput {
  slug: String
  name: String!
  connectionId: String!
  sql: String!
  primaryKey: String!
}

input MatchKeyInput {
  sourceColumn: String!
  destinationField: String!
}

input IntervalScheduleInput {
  "10 to 31536000."
  everySeconds: Int!
  "An ISO 8601 timestamp with an offset on the grid of slots (anchor + k × everySeconds). Default: the sync's creation."
  anchor: String
}

input CronScheduleInput {
  "Five fields, e.g. 0 6 * * 1-5."
  expression: String!
  "IANA time zone."
  timezone: String = "UTC"
}

"Exactly one: manual (true: run on trigger only), interval or cron."
input ScheduleInput @oneOf {
  manual: Boolean
  interval: IntervalScheduleInput
  cron: CronScheduleInput
}

input DeliveryInput {
  batchSize: Int
  concurrency: Int
  "null: no limit."
  maxRequestsPerSecond: Float
  maxRetries: Int
}

input AlertsInput {
  channelIds: [ID!]
  onFailure: Boolean
  rowFailurePercent: Float
  maxDurationSeconds: Int
  consecutiveFailures: Int
}

input CreateSyncInput {
  slug: String!
  name: String!
  "Id or slug of a model."
  modelId: String!
  "Id or slug of a connection with the destination role."
  destinationId: String!
  object: String!
  mode: SyncMode!
  matchKey: MatchKeyInput!
  schedule: ScheduleInput
  enabled: Boolean
  delivery: DeliveryInput
  alerts: AlertsInput
  changeThresholds: ChangeThresholdsInput
  "The whole mapping set, written with the sync (one atomic write); absent: left as it is."
  mappings: [MappingInput!]
}

input UpdateSyncInput {
  slug: String
  name: String
  modelId: String
  destinationId: String
  object: String
  mode: SyncMode
  matchKey: MatchKeyInput
  schedule: ScheduleInput
  enabled: Boolean
  "Merged over the current delivery settings."
  delivery: DeliveryInput
  "Merged over the current alert rules."
  alerts: AlertsInput
  "Merged over the current thresholds."
  changeThresholds: ChangeThresholdsInput
  "Replaces the whole mapping set, with the sync (one atomic write)."
  mappings: [MappingInput!]
}

"Optional groups not sent go back to their defaults."
input ReplaceSyncInput {
  slug: String
  name: String!
  modelId: String!
  destinationId: String!
  object: String!
  mode: SyncMode!
  matchKey: MatchKeyInput!
  schedule: ScheduleInput
  enabled: Boolean
  delivery: DeliveryInput
  alerts: AlertsInput
  changeThresholds: ChangeThresholdsInput
  "The whole mapping set, written with the sync (one atomic write); absent: left as it is."
  mappings: [MappingInput!]
}

"Needs a destination whose type has the lookup capability (else code lookup_not_supported)."
input LookupInput {
  object: String!
  matchField: String!
  sourceColumn: String!
  resultField: String!
  "Compare case-insensitively and trimmed (e-mails); absent or null: not set (false)."
  caseInsensitive: Boolean
  "No matching record: the row is invalid (default) or the field is left unset; absent or null: not set (invalid)."
  onMissing: LookupOnMissing
}

"Exactly one of the fields."
input MappingSourceInput @oneOf {
  column: String
  static: JSON
  template: String
  lookup: LookupInput
}

input MappingInput {
  destinationField: String!
  source: MappingSourceInput!
}

input UpdateMappingInput {
  destinationField: String
  source: MappingSourceInput
}

input CreateApiKeyInput {
  name: String!
  scopes: [Scope!]!
}

input CreateWorkspaceInput {
  slug: String!
  name: String!
}

input CreateWebhookEndpointInput {
  slug: String!
  name: String!
  url: String!
  description: String
  "Event types (run.started, run.completed, alert.raised, alert.resolved, sequence_run.completed); empty or absent = all."
  events: [String!]
  "Sync ids or slugs; empty or absent = all syncs."
  syncIds: [String!]
  enabled: Boolean
  "whsec_ + base64 of 24–64 random bytes; generated when absent."
  secret: String
}

input UpdateWebhookEndpointInput {
  slug: String
  name: String
  url: String
  "null clears it."
  description: String
  events: [String!]
  syncIds: [String!]
  "Enabling again clears disabledReason."
  enabled: Boolean
}

"Absent optional fields go back to their defaults. A secret different from the current one rotates it (default grace period)."
input ReplaceWebhookEndpointInput {
  slug: String
  name: String!
  url: String!
  description: String
  events: [String!]
  syncIds: [String!]
  enabled: Boolean
  secret: String
}

input SecretRotationInput {
  "Generated when absent."
  secret: String
  "How long the previous secret keeps signing too (0..604800, default 86400)."
  gracePeriodSeconds: Int
}

input AlertChannelConfigInput {
  eventsUrl: String
  severity: AlertSeverity
  url: String
}

"Write-only. slack: webhookUrl (required); pagerduty: routingKey (required); webhook: signingSecret (optional)."
input AlertChannelSecretsInput {
  webhookUrl: String
  routingKey: String
  signingSecret: String
}

input CreateAlertChannelInput {
  slug: String!
  name: String!
  type: AlertChannelType!
  config: AlertChannelConfigInput
  secrets: AlertChannelSecretsInput
}

"config and secrets are merged field by field."
input UpdateAlertChannelInput {
  slug: String
  name: String
  config: AlertChannelConfigInput
  secrets: AlertChannelSecretsInput
}

"Secrets, when absent, keep their current values (if the type is unchanged)."
input ReplaceAlertChannelInput {
  slug: String
  name: String!
  type: AlertChannelType!
  config: AlertChannelConfigInput
  secrets: AlertChannelSecretsInput
}

# ---- Declarative configuration ----------------------------------------------------------------

enum PlanAction {
  create
  update
  delete
}

"One field of a planned update (or create). Secrets are never shown: secret is true and before/after are null."
type PlannedFieldChange {
  "Dotted path, e.g. config.host, mappings.firstname, secrets.password."
  field: String!
  before: JSON
  after: JSON
  secret: Boolean!
}

type PlannedChange {
  action: PlanAction!
  "connection, alertChannel, model, sync, webhookEndpoint or sequence."
  kind: String!
  slug: String!
  "The resource on the server (null for a create)."
  resourceId: ID
  "The version the write is made against (null for a create)."
  expectedVersion: Int
  "JSON pointer of the item in the bundle (null for a delete)."
  bundlePath: String
  fields: [PlannedFieldChange!]!
  "After applyBundle: the version written (null for a delete or in a plan)."
  version: Int
}

type PlanSummary {
  create: Int!
  update: Int!
  delete: Int!
  unchanged: Int!
}

"What applying a bundle changes (planBundle), or changed (applyBundle)."
type BundlePlan {
  "Pass it to applyBundle to apply exactly this plan."
  planHash: String!
  prune: Boolean!
  changes: [PlannedChange!]!
  summary: PlanSummary!
}

# ---- Sequences ---------------------------------------------------------------------------------

enum SequenceOnFailure {
  "A failed step ends the sequence run; later steps are skipped."
  stop
  "The next steps run anyway."
  continue
}

enum SequenceRunStatus {
  queued
  running
  succeeded
  failed
  cancelled
}

enum SequenceStepStatus {
  "Not reached yet."
  pending
  "Its sync run is queued or running."
  running
  succeeded
  partially_succeeded
  failed
  cancelled
  "Not run: an earlier step failed (onFailure stop) or the sequence run was cancelled."
  skipped
}

type SequenceStep {
  syncId: ID!
  syncSlug: String!
  sync: Sync!
}

"An ordered list of syncs run one after another, on its own schedule or trigger."
type Sequence implements Node {
  id: ID!
  slug: String!
  name: String!
  steps: [SequenceStep!]!
  schedule: Schedule!
  enabled: Boolean!
  onFailure: SequenceOnFailure!
  createdAt: DateTime!
  updatedAt: DateTime!
  version: Int!
  "Sequence runs, newest first."
  runs(first: Int, after: String, status: SequenceRunStatus): SequenceRunConnection!
}

type SequenceEdge {
  cursor: String!
  node: Sequence!
}

type SequenceConnection {
  edges: [SequenceEdge!]!
  nodes: [Sequence!]!
  pageInfo: PageInfo!
}

type ReplaceSequencePayload {
  created: Boolean!
  sequence: Sequence!
}

type SequenceStepError {
  code: String!
  message: String!
}

type SequenceRunStep {
  "1 for the first step."
  position: Int!
  syncId: ID!
  "Null when the sync was deleted since."
  sync: Sync
  "The step's sync run; null until the step comes up (or when it could not be triggered)."
  runId: ID
  run: Run
  status: SequenceStepStatus!
  error: SequenceStepError
}

type SequenceRunError {
  "step_failed or cancelled."
  code: String!
  message: String!
  "The (first) failed step."
  position: Int
  syncId: ID
}

"One execution of a sequence."
type SequenceRun implements Node {
  id: ID!
  sequenceId: ID!
  sequence: Sequence!
  status: SequenceRunStatus!
  trigger: RunTrigger!
  "As the sequence said when this run was triggered."
  onFailure: SequenceOnFailure!
  "The steps as they were when the run was triggered."
  steps: [SequenceRunStep!]!
  "Position of the step being run; null when queued or finished."
  currentStep: Int
  queuedAt: DateTime!
  startedAt: DateTime
  finishedAt: DateTime
  error: SequenceRunError
}

type SequenceRunEdge {
  cursor: String!
  node: SequenceRun!
}

type SequenceRunConnection {
  edges: [SequenceRunEdge!]!
  nodes: [SequenceRun!]!
  pageInfo: PageInfo!
}

type TriggerSequenceRunPayload {
  sequenceRun: SequenceRun!
  "False when the sequence already had a run queued or running: that run is returned."
  created: Boolean!
}

input SequenceStepInput {
  "Id or slug of a sync of this workspace."
  syncId: String!
}

input CreateSequenceInput {
  slug: String!
  name: String!
  steps: [SequenceStepInput!]!
  schedule: ScheduleInput
  enabled: Boolean
  onFailure: SequenceOnFailure
}

input UpdateSequenceInput {
  slug: String
  name: String
  "Replaces the whole list."
  steps: [SequenceStepInput!]
  schedule: ScheduleInput
  enabled: Boolean
  onFailure: SequenceOnFailure
}

"Optional fields not sent go back to their defaults."
input ReplaceSequenceInput {
  slug: String
  name: String!
  steps: [SequenceStepInput!]!
  schedule: ScheduleInput
  enabled: Boolean
  onFailure: SequenceOnFailure
}

# ---- Operations -------------------------------------------------------------------------------

type Query {
  "Any object by its global id; null when it does not exist in your workspace."
  node(id: ID!): Node
  "Up to 100 objects by id, in the order asked (null where not found)."
  nodes(ids: [ID!]!): [Node]!
  viewer: Viewer!
  "The connector catalog."
  connectors: [Connector!]!
  "The connector catalog as a connection (all of it unless first is given)."
  connectorConnection(first: Int, after: String): ConnectorConnection!
  connections(first: Int, after: String, type: String, orderBy: ListOrder, search: String): ConnectionConnection!
  "By id or slug."
  connection(ref: String!): Connection
  "connectionId: an id or a slug."
  models(first: Int, after: String, connectionId: ID, orderBy: ListOrder, search: String): ModelConnection!
  model(ref: String!): Model
  "modelId and destinationId: ids or slugs."
  syncs(first: Int, after: String, modelId: ID, destinationId: ID, enabled: Boolean, orderBy: ListOrder, search: String): SyncConnection!
  sync(ref: String!): Sync
  "With wait (seconds, 1 to 60): answers once the run is terminal, or the run as it is after that long (no polling: run notifications)."
  run(id: ID!, wait: Int): Run
  "Admin scope."
  apiKeys(first: Int, after: String): ApiKeyConnection!
  "Newest first."
  auditEvents(first: Int, after: String, resourceType: String, resourceId: String, since: DateTime, until: DateTime): AuditEventConnection!
  "Owner keys only."
  workspaces(first: Int, after: String): WorkspaceConnection!
  webhookEndpoints(first: Int, after: String): WebhookEndpointConnection!
  "By id or slug."
  webhookEndpoint(ref: String!): WebhookEndpoint
  "Whether the workspace's callback secret is set (the value is never shown again)."
  callbackSecret: CallbackSecret!
  alertChannels(first: Int, after: String): AlertChannelConnection!
  "By id or slug."
  alertChannel(ref: String!): AlertChannel
  sequences(first: Int, after: String, enabled: Boolean, orderBy: ListOrder, search: String): SequenceConnection!
  "By id or slug."
  sequence(ref: String!): Sequence
  "With wait (seconds, 1 to 60): answers once the sequence run is terminal, or as it is after that long."
  sequenceRun(id: ID!, wait: Int): SequenceRun
  "Alerts raised by syncs, newest first; syncId is a sync id or slug."
  alerts(first: Int, after: String, status: AlertStatus, syncId: ID): AlertConnection!
  "The workspace's configuration as a declarative bundle (as GET /v1/export)."
  exportBundle: JSON!
  "What applying the bundle (as POST /v1/plan takes it) would change; nothing is written."
  planBundle(bundle: JSON!): BundlePlan!
}

type Mutation {
  "Applies a declarative bundle in one transaction (as POST /v1/apply). planHash: apply only if the plan is still that one (code plan_changed otherwise)."
  applyBundle(bundle: JSON!, planHash: String): BundlePlan!
  createConnection(input: CreateConnectionInput!): Connection!
  updateConnection(ref: String!, input: UpdateConnectionInput!, expectedVersion: Int): Connection!
  "Replaces the connection, or creates it when \`ref\` is a slug that does not exist."
  replaceConnection(ref: String!, input: ReplaceConnectionInput!, expectedVersion: Int, "True: create only; fails with code already_exists when it exists." createOnly: Boolean = false): ReplaceConnectionPayload!
  deleteConnection(ref: String!, expectedVersion: Int): DeletePayload!
  "Reaches the remote system; a failure is reported in the result, not as an error."
  testConnection(ref: String!): ConnectionTestResult!
  "Starts connecting the connection through OAuth 2.0 (authorization code with PKCE), as POST /v1/connections/{ref}/oauth/start: open authorizationUrl in a browser; the provider then redirects to GET /v1/oauth/callback, which stores the tokens. Codes: oauth_not_supported, oauth_client_not_configured, return_url_not_allowed."
  startConnectionOAuth(ref: String!, input: StartConnectionOAuthInput): StartConnectionOAuthPayload!

  "validate: check the SQL and primary key against the source before saving."
  createModel(input: CreateModelInput!, validate: Boolean = true): Model!
  updateModel(ref: String!, input: UpdateModelInput!, expectedVersion: Int, validate: Boolean = true): Model!
  replaceModel(ref: String!, input: ReplaceModelInput!, expectedVersion: Int, validate: Boolean = true, "True: create only; fails with code already_exists when it exists." createOnly: Boolean = false): ReplaceModelPayload!
  deleteModel(ref: String!, expectedVersion: Int): DeletePayload!

  createSync(input: CreateSyncInput!): Sync!
  updateSync(ref: String!, input: UpdateSyncInput!, expectedVersion: Int): Sync!
  replaceSync(ref: String!, input: ReplaceSyncInput!, expectedVersion: Int, "True: create only; fails with code already_exists when it exists." createOnly: Boolean = false): ReplaceSyncPayload!
  deleteSync(ref: String!, expectedVersion: Int): DeletePayload!

  createMapping(syncRef: String!, input: MappingInput!): Mapping!
  updateMapping(syncRef: String!, id: ID!, input: UpdateMappingInput!, expectedVersion: Int): Mapping!
  replaceMapping(syncRef: String!, id: ID!, input: MappingInput!, expectedVersion: Int): Mapping!
  deleteMapping(syncRef: String!, id: ID!, expectedVersion: Int): DeletePayload!
  "Replaces the sync's whole mapping set; expectedSyncVersion guards it with the sync's version."
  setMappings(syncRef: String!, mappings: [MappingInput!]!, expectedSyncVersion: Int): [Mapping!]!
  "Automapper: proposes mappings; with apply, adds those at or above minConfidence (default 0.8)."
  suggestMappings(syncRef: String!, apply: Boolean = false, minConfidence: Float): MappingSuggestions!

  "Admin scope."
  createApiKey(input: CreateApiKeyInput!): CreateApiKeyPayload!
  "Admin scope."
  revokeApiKey(id: ID!): DeletePayload!
  "Owner keys only."
  createWorkspace(input: CreateWorkspaceInput!): CreateWorkspacePayload!

  createSequence(input: CreateSequenceInput!): Sequence!
  updateSequence(ref: String!, input: UpdateSequenceInput!, expectedVersion: Int): Sequence!
  "Replaces the sequence, or creates it when \`ref\` is a slug that does not exist."
  replaceSequence(ref: String!, input: ReplaceSequenceInput!, expectedVersion: Int, "True: create only; fails with code already_exists when it exists." createOnly: Boolean = false): ReplaceSequencePayload!
  deleteSequence(ref: String!, expectedVersion: Int): DeletePayload!
  "Starts a sequence run (or returns the one queued or running)."
  triggerSequenceRun(sequenceRef: String!): TriggerSequenceRunPayload!
  "Later steps are skipped; the current step's run is cancelled when the sequence triggered it."
  cancelSequenceRun(id: ID!): SequenceRun!

  triggerRun(syncRef: String!, fullResync: Boolean, dryRun: Boolean, allowDeletions: Boolean, callbackUrl: String): TriggerRunPayload!
  cancelRun(id: ID!): Run!

  "The payload holds the signing secret, shown once."
  createWebhookEndpoint(input: CreateWebhookEndpointInput!): CreateWebhookEndpointPayload!
  updateWebhookEndpoint(ref: String!, input: UpdateWebhookEndpointInput!, expectedVersion: Int): WebhookEndpoint!
  "Replaces the endpoint, or creates it when \`ref\` is a slug that does not exist."
  replaceWebhookEndpoint(ref: String!, input: ReplaceWebhookEndpointInput!, expectedVersion: Int, "True: create only; fails with code already_exists when it exists." createOnly: Boolean = false): ReplaceWebhookEndpointPayload!
  "Its pending deliveries go with it."
  deleteWebhookEndpoint(ref: String!, expectedVersion: Int): DeletePayload!
  "New signing secret (given or generated), returned once; the previous one keeps signing during the grace period."
  rotateWebhookSecret(ref: String!, input: SecretRotationInput): RotateWebhookSecretPayload!
  "Sends a delivery again as a new delivery (same webhook-id and body) to the endpoint's current URL; the endpoint must be enabled."
  redeliverWebhook(endpointRef: String!, id: ID!): WebhookDelivery!
  "Admin scope. Rotates (or creates) the secret signing callbackUrl deliveries; returned once."
  rotateCallbackSecret(input: SecretRotationInput): RotateCallbackSecretPayload!

  createAlertChannel(input: CreateAlertChannelInput!): AlertChannel!
  updateAlertChannel(ref: String!, input: UpdateAlertChannelInput!, expectedVersion: Int): AlertChannel!
  "Replaces the channel, or creates it when \`ref\` is a slug that does not exist."
  replaceAlertChannel(ref: String!, input: ReplaceAlertChannelInput!, expectedVersion: Int, "True: create only; fails with code already_exists when it exists." createOnly: Boolean = false): ReplaceAlertChannelPayload!
  "A channel named in a sync's alert rules cannot be deleted (code resource_in_use)."
  deleteAlertChannel(ref: String!, expectedVersion: Int): DeletePayload!
  "Sends a test message; a failure is reported in the result, not as an error."
  testAlertChannel(ref: String!): AlertChannelTestResult!
}

type Subscription {
  "Every status or phase change of the sync's runs (id or slug)."
  runUpdated(syncId: ID!): RunUpdate!
}
`;

let built: GraphQLSchema | undefined;

/** The executable shape (no resolvers): for the SDL artifact and the limit analysis. */
export function baseSchema(): GraphQLSchema {
  built ??= buildSchema(typeDefs);
  return built;
}

/** The SDL committed as openapi/schema.graphql. */
export function graphqlSdl(): string {
  return `${printSchema(baseSchema())}\n`;
}
