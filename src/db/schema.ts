import { sql } from 'drizzle-orm';
import {
  bigint,
  boolean,
  index,
  integer,
  jsonb,
  pgSequence,
  pgTable,
  pgView,
  primaryKey,
  text,
  timestamp,
  uniqueIndex,
} from 'drizzle-orm/pg-core';

// The control database. Every tenant-owned row carries workspace_id, and every query filters
// on it: isolation is a property of the data access, not of the routes.

const ts = (name: string) => timestamp(name, { withTimezone: true, mode: 'date' });
const created = () => ts('created_at').notNull().defaultNow();
const updated = () => ts('updated_at').notNull().defaultNow();

export const workspaces = pgTable('workspaces', {
  id: text('id').primaryKey(),
  slug: text('slug').notNull().unique(),
  name: text('name').notNull(),
  createdAt: created(),
  updatedAt: updated(),
});

export const apiKeys = pgTable(
  'api_keys',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => workspaces.id, { onDelete: 'cascade' }),
    name: text('name').notNull(),
    tokenHash: text('token_hash').notNull().unique(),
    /** First characters of the token, to recognise it in a list. */
    tokenPrefix: text('token_prefix').notNull(),
    scopes: text('scopes').array().notNull(),
    /** Owner keys may create workspaces. */
    owner: boolean('owner').notNull().default(false),
    createdAt: created(),
    lastUsedAt: ts('last_used_at'),
    revokedAt: ts('revoked_at'),
  },
  (t) => [index('api_keys_workspace_idx').on(t.workspaceId, t.id)],
);

export const connections = pgTable(
  'connections',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => workspaces.id, { onDelete: 'cascade' }),
    slug: text('slug').notNull(),
    name: text('name').notNull(),
    type: text('type').notNull(),
    config: jsonb('config').notNull(),
    /** AES-256-GCM sealed JSON object of secrets; values never leave the process. */
    secretsSealed: text('secrets_sealed'),
    secretNames: text('secret_names').array().notNull().default(sql`'{}'::text[]`),
    /** Per secret: keyed fingerprint of its value and when the value last changed (src/domain/secret-meta.ts). */
    secretMeta: jsonb('secret_meta').$type<Record<string, { fingerprint: string; updatedAt: string }>>().notNull().default({}),
    /** `reauthorization_required` when the OAuth refresh token was refused; null otherwise. */
    authStatus: text('auth_status'),
    /** Why (the provider's answer), with authStatus. */
    authError: text('auth_error'),
    version: integer('version').notNull().default(1),
    createdAt: created(),
    updatedAt: updated(),
  },
  (t) => [uniqueIndex('connections_slug_uq').on(t.workspaceId, t.slug), index('connections_ws_idx').on(t.workspaceId, t.id)],
);

/**
 * Pending OAuth authorization requests (POST /v1/connections/{ref}/oauth/start): kept server-side
 * so that any instance can take the callback. Single use (deleted when the callback consumes it),
 * expiring after 10 minutes. Only a hash of `state` is stored; the PKCE verifier is sealed.
 */
export const oauthStates = pgTable(
  'oauth_states',
  {
    stateHash: text('state_hash').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => workspaces.id, { onDelete: 'cascade' }),
    connectionId: text('connection_id')
      .notNull()
      .references(() => connections.id, { onDelete: 'cascade' }),
    codeVerifierSealed: text('code_verifier_sealed').notNull(),
    redirectUri: text('redirect_uri').notNull(),
    returnUrl: text('return_url'),
    /** The API key that started the flow (audit). */
    keyId: text('key_id'),
    createdAt: created(),
    expiresAt: ts('expires_at').notNull(),
  },
  (t) => [index('oauth_states_expires_idx').on(t.expiresAt), index('oauth_states_connection_idx').on(t.connectionId)],
);

export const models = pgTable(
  'models',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => workspaces.id, { onDelete: 'cascade' }),
    slug: text('slug').notNull(),
    name: text('name').notNull(),
    connectionId: text('connection_id')
      .notNull()
      .references(() => connections.id, { onDelete: 'restrict' }),
    sql: text('sql').notNull(),
    primaryKey: text('primary_key').notNull(),
    version: integer('version').notNull().default(1),
    createdAt: created(),
    updatedAt: updated(),
  },
  (t) => [
    uniqueIndex('models_slug_uq').on(t.workspaceId, t.slug),
    index('models_ws_idx').on(t.workspaceId, t.id),
    index('models_connection_idx').on(t.connectionId),
  ],
);

export const syncs = pgTable(
  'syncs',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => workspaces.id, { onDelete: 'cascade' }),
    slug: text('slug').notNull(),
    name: text('name').notNull(),
    modelId: text('model_id')
      .notNull()
      .references(() => models.id, { onDelete: 'restrict' }),
    destinationId: text('destination_id')
      .notNull()
      .references(() => connections.id, { onDelete: 'restrict' }),
    object: text('object').notNull(),
    mode: text('mode').notNull(),
    matchKey: jsonb('match_key').notNull(),
    schedule: jsonb('schedule').notNull(),
    enabled: boolean('enabled').notNull().default(true),
    delivery: jsonb('delivery').notNull(),
    alerts: jsonb('alerts').notNull(),
    /** Change thresholds (deletion and change guards); absent keys take their defaults. */
    changeThresholds: jsonb('change_thresholds').notNull().default(sql`'{}'::jsonb`),
    /**
     * Which snapshot the sync's runs read and write: bumped (and the snapshot emptied) when the
     * destination, object, match key or mode changes, so a run planned against the old place can
     * no longer checkpoint into the new one.
     */
    snapshotVersion: integer('snapshot_version').notNull().default(1),
    snapshotResetAt: ts('snapshot_reset_at'),
    version: integer('version').notNull().default(1),
    createdAt: created(),
    updatedAt: updated(),
  },
  (t) => [
    uniqueIndex('syncs_slug_uq').on(t.workspaceId, t.slug),
    index('syncs_ws_idx').on(t.workspaceId, t.id),
    index('syncs_model_idx').on(t.modelId),
    index('syncs_destination_idx').on(t.destinationId),
  ],
);

export const mappings = pgTable(
  'mappings',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => workspaces.id, { onDelete: 'cascade' }),
    syncId: text('sync_id')
      .notNull()
      .references(() => syncs.id, { onDelete: 'cascade' }),
    destinationField: text('destination_field').notNull(),
    source: jsonb('source').notNull(),
    version: integer('version').notNull().default(1),
    createdAt: created(),
    updatedAt: updated(),
  },
  (t) => [uniqueIndex('mappings_field_uq').on(t.syncId, t.destinationField), index('mappings_sync_idx').on(t.syncId, t.id)],
);

export const auditEvents = pgTable(
  'audit_events',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => workspaces.id, { onDelete: 'cascade' }),
    actorKeyId: text('actor_key_id'),
    action: text('action').notNull(),
    resourceType: text('resource_type').notNull(),
    resourceId: text('resource_id').notNull(),
    changedFields: text('changed_fields').array().notNull().default(sql`'{}'::text[]`),
    requestId: text('request_id'),
    createdAt: created(),
  },
  (t) => [
    index('audit_ws_idx').on(t.workspaceId, t.id),
    index('audit_resource_idx').on(t.workspaceId, t.resourceType, t.resourceId),
  ],
);

export const idempotencyKeys = pgTable(
  'idempotency_keys',
  {
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => workspaces.id, { onDelete: 'cascade' }),
    /** The API key that made the request: a stored response is replayed to that key only. */
    apiKeyId: text('api_key_id').notNull().default(''),
    /** That key's scopes when the response was stored: a replay needs them still (no downscoped replay). */
    scopes: text('scopes').array(),
    key: text('key').notNull(),
    method: text('method').notNull(),
    path: text('path').notNull(),
    requestHash: text('request_hash').notNull(),
    /** `in_progress` while the first request runs; `done` once its response is stored. */
    state: text('state').notNull(),
    statusCode: integer('status_code'),
    responseHeaders: jsonb('response_headers'),
    responseBody: text('response_body'),
    /** The response carried a secret shown once: the stored body has it redacted and is never replayed. */
    secretRedacted: boolean('secret_redacted').notNull().default(false),
    createdAt: created(),
    /** Lock expiry of an in_progress entry whose process died. */
    lockedUntil: ts('locked_until'),
  },
  (t) => [primaryKey({ columns: [t.workspaceId, t.apiKeyId, t.key] }), index('idempotency_created_idx').on(t.createdAt)],
);

// Generic key/value for process-wide state (e.g. whether the bootstrap already happened).
export const systemState = pgTable('system_state', {
  key: text('key').primaryKey(),
  value: jsonb('value').notNull(),
  updatedAt: updated(),
});

/**
 * One row per live worker process (`backhaul worker` or `serve` with its worker), written every
 * few seconds (WorkerOptions.processHeartbeatMs). `pool_ids` are graphile-worker's `locked_by`
 * values of the process's runners. A row not seen for processStaleAfterMs belongs to a process
 * that is gone (kill -9, host lost): the sweep of any other worker deletes it and releases the
 * jobs those pools hold (graphile_worker.force_unlock_workers), instead of graphile-worker's
 * 4-hour lock expiry.
 */
export const workerProcesses = pgTable('worker_processes', {
  id: text('id').primaryKey(),
  poolIds: text('pool_ids').array().notNull().default(sql`'{}'::text[]`),
  host: text('host').notNull(),
  pid: integer('pid').notNull(),
  startedAt: ts('started_at').notNull().defaultNow(),
  lastSeenAt: ts('last_seen_at').notNull().defaultNow(),
  /**
   * Run slots of the process free at its last heartbeat: other processes leave a sync's run to
   * this one, which kept the sync's comparison table, only while it has one (engine/affinity.ts).
   */
  idleRunSlots: integer('idle_run_slots').notNull().default(0),
});

// ---- Engine ----------------------------------------------------------------------------------
// A run's plan and staging rows live in per-run tables (schema backhaul_staging, made and dropped
// by the engine); what outlives a run is below.

/** Claims of runs by executions, in order (runs.claim_seq). */
export const runClaimSeq = pgSequence('run_claim_seq');

export const runs = pgTable(
  'runs',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => workspaces.id, { onDelete: 'cascade' }),
    syncId: text('sync_id')
      .notNull()
      .references(() => syncs.id, { onDelete: 'cascade' }),
    status: text('status').notNull(),
    phase: text('phase'),
    trigger: text('trigger').notNull(),
    fullResync: boolean('full_resync').notNull().default(false),
    callbackUrl: text('callback_url'),
    queuedAt: ts('queued_at').notNull().defaultNow(),
    startedAt: ts('started_at'),
    finishedAt: ts('finished_at'),
    phases: jsonb('phases').notNull().default(sql`'[]'::jsonb`),
    counts: jsonb('counts').notNull(),
    error: jsonb('error'),
    /** Set by POST /cancel; the worker stops between batches. */
    cancelRequestedAt: ts('cancel_requested_at'),
    /** graphile-worker id holding the run, and its last sign of life (for the stale-run sweep). */
    workerId: text('worker_id'),
    heartbeatAt: ts('heartbeat_at'),
    /** Progress markers for resumption: staging complete, plan built (with its size). */
    stagedAt: ts('staged_at'),
    plannedAt: ts('planned_at'),
    plannedTotal: integer('planned_total'),
    /** Executions so far; also the lease: only the execution holding this number may write. */
    attempts: integer('attempts').notNull().default(0),
    /**
     * The run's latest claim, from run_claim_seq (global, increasing): a run writes its sync's
     * snapshot only once claimed, so a sync whose highest claim is unchanged had no new writer
     * (a worker's kept comparison table is still current: src/engine/fingerprint-cache.ts).
     */
    claimSeq: bigint('claim_seq', { mode: 'number' }),
    /** The sync's snapshot version the plan was built against (see syncs.snapshot_version). */
    snapshotVersion: integer('snapshot_version'),
    /** Trigger options: bypass the deletion guard once; plan and report without sending. */
    allowDeletions: boolean('allow_deletions').notNull().default(false),
    dryRun: boolean('dry_run').notNull().default(false),
    /** Dry runs: a sample of planned operations with their payloads. */
    planSample: jsonb('plan_sample'),
    /**
     * The outbox of a finished run: its run.completed events were emitted (set in the same
     * transaction), then its alert rules evaluated. The job that does it is enqueued in the
     * transaction that makes the run terminal, so no crash between the two loses it.
     */
    completedEmittedAt: ts('completed_emitted_at'),
    /** Durable state of writes that outlive a process (a Salesforce bulk job id), by key. */
    writeState: jsonb('write_state').notNull().default(sql`'{}'::jsonb`),
    alertsEvaluatedAt: ts('alerts_evaluated_at'),
  },
  (t) => [
    index('runs_sync_idx').on(t.syncId, t.id),
    index('runs_ws_idx').on(t.workspaceId, t.id),
    index('runs_active_idx').on(t.syncId).where(sql`status in ('queued', 'running')`),
    index('runs_claim_idx').on(t.syncId, t.claimSeq),
    // At most one queued run per sync (a trigger returns the queued one), and one queued dry run:
    // the scheduler's one-statement trigger relies on it (src/domain/runs.ts fireScheduled).
    uniqueIndex('runs_one_queued_uq').on(t.syncId, t.dryRun).where(sql`status = 'queued'`),
  ],
);

// The two tables written once per row of every run carry no foreign keys and as few indexes as
// their reads need: per-row FK checks and index entries were most of a run's database time.
// Deleting a run or a sync still removes its rows: statement-level triggers (migration 0004).

export const runRecords = pgTable(
  'run_records',
  {
    runId: text('run_id').notNull(),
    workspaceId: text('workspace_id').notNull(),
    syncId: text('sync_id').notNull(),
    primaryKey: text('primary_key').notNull(),
    operation: text('operation').notNull(),
    status: text('status').notNull(),
    errorCode: text('error_code'),
    errorMessage: text('error_message'),
    attempts: integer('attempts').notNull().default(1),
    batch: integer('batch'),
    /** The destination's id of the record this row wrote, when it returned one. */
    recordId: text('record_id'),
    /**
     * The row may have reached the destination more than once in this run: an execution that
     * ended before recording its outcome (crash, takeover, lost plan) had sent it (see run_inflight).
     */
    redelivered: boolean('redelivered').notNull().default(false),
    createdAt: created(),
  },
  (t) => [
    // Serves a run's records, a row's history (probed once per run of the sync) and retention.
    primaryKey({ columns: [t.runId, t.primaryKey, t.operation] }),
    // Rejected and invalid rows: what callbacks and UIs filter on; succeeded rows stay out of it.
    index('run_records_problems_idx').on(t.runId, t.status, t.primaryKey, t.operation).where(sql`status <> 'succeeded'`),
  ],
);

/**
 * Rows a batch delivered, recorded in bulk: one row per acknowledged batch of a plan built before
 * any outcome of its run was recorded (the usual case), holding the batch's primary keys and,
 * position by position, what differs from the defaults (record ids; attempts when not 1;
 * `redelivered` when any is). What a batch rejected, rows never sent (invalid) and every outcome
 * of a plan rebuilt mid-run stay one row each in run_records (a rebuild first moves the run's bulk
 * rows there: a run's (row, operation) is recorded in one place only). Read both through
 * run_outcomes. One insert per batch instead of one index entry per row: the checkpoint's largest
 * part (issue 17).
 */
export const runBatches = pgTable(
  'run_batches',
  {
    runId: text('run_id')
      .notNull()
      .references(() => runs.id, { onDelete: 'cascade' }),
    batch: integer('batch').notNull(),
    operation: text('operation').notNull(),
    workspaceId: text('workspace_id').notNull(),
    syncId: text('sync_id').notNull(),
    primaryKeys: text('primary_keys').array().notNull(),
    /** The destination's record ids by position; null when none is known. */
    recordIds: text('record_ids').array(),
    /** Attempts by position; null when every row took one. */
    attempts: integer('attempts').array(),
    /** Redelivered marks by position (see run_records.redelivered); null when none is. */
    redelivered: boolean('redelivered').array(),
    createdAt: created(),
  },
  (t) => [primaryKey({ columns: [t.runId, t.batch, t.operation] })],
);

/**
 * Every recorded outcome of a run's rows: run_records and the rows of run_batches, one row per
 * (run, primary key, operation), with run_records' columns. Created by migration 0017.
 */
export const runOutcomes = pgView('run_outcomes', {
  runId: text('run_id').notNull(),
  workspaceId: text('workspace_id').notNull(),
  syncId: text('sync_id').notNull(),
  primaryKey: text('primary_key').notNull(),
  operation: text('operation').notNull(),
  status: text('status').notNull(),
  errorCode: text('error_code'),
  errorMessage: text('error_message'),
  attempts: integer('attempts').notNull(),
  batch: integer('batch'),
  recordId: text('record_id'),
  redelivered: boolean('redelivered').notNull(),
  createdAt: ts('created_at').notNull(),
}).existing();

/**
 * Batches handed to a destination whose outcome is not recorded yet: one row per batch, written
 * (fenced by the run's lease) before its request leaves and deleted by the checkpoint that records
 * it. What an execution leaves behind (it crashed, lost its lease, or PostgreSQL lost the plan)
 * names the rows a later execution may send again: their records get `redelivered` and count
 * these sends in `attempts`. Few rows at any time (concurrency × executions).
 */
export const runInflight = pgTable(
  'run_inflight',
  {
    runId: text('run_id')
      .notNull()
      .references(() => runs.id, { onDelete: 'cascade' }),
    /** runs.attempts of the execution that sent it. */
    lease: integer('lease').notNull(),
    batch: integer('batch').notNull(),
    primaryKeys: text('primary_keys').array().notNull(),
    createdAt: created(),
  },
  (t) => [primaryKey({ columns: [t.runId, t.lease, t.batch] })],
);

/**
 * The snapshot: what the destination is known to hold for a sync, one row per destination
 * record Backhaul wrote and the destination acknowledged. A record is identified by its match
 * key (the match value normalised the way the destination compares it) and, once known, by the
 * id the destination returned; `primary_key` is the model row that last claimed it.
 */
export const syncSnapshots = pgTable(
  'sync_snapshots',
  {
    syncId: text('sync_id').notNull(),
    /** JSON of the normalised match value (e.g. trimmed and lower-cased for case-insensitive emails). */
    matchKey: text('match_key').notNull(),
    primaryKey: text('primary_key').notNull(),
    hash: text('hash').notNull(),
    /** The match value as it was sent (what a delete sends back). */
    matchValue: jsonb('match_value'),
    /** The destination's id for the record, when it returned one. */
    recordId: text('record_id'),
    /**
     * `<evaluation version>:<source fingerprint>` of the model row whose payload this record
     * holds: a hash of the source row computed by the source database, prefixed by a hash of
     * everything else the payload depends on (model SQL and primary key, mappings, match key,
     * destination fields, fingerprint function). An incremental run reads in full only rows
     * whose key and fingerprint match no record under the current version. Null: unknown.
     */
    sourceFingerprint: text('source_fp'),
    updatedAt: updated(),
  },
  (t) => [primaryKey({ columns: [t.syncId, t.matchKey] })],
);

// ---- Callbacks, alerts, row debugger ------------------------------------------------------------

/** A URL subscribed to events, with its signing secret (and, during a rotation, the previous one). */
export const webhookEndpoints = pgTable(
  'webhook_endpoints',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => workspaces.id, { onDelete: 'cascade' }),
    slug: text('slug').notNull(),
    name: text('name').notNull(),
    url: text('url').notNull(),
    description: text('description'),
    /** Event types delivered; empty = every event. */
    events: text('events').array().notNull().default(sql`'{}'::text[]`),
    /** Only events about these syncs (ids); empty = every sync. */
    syncIds: text('sync_ids').array().notNull().default(sql`'{}'::text[]`),
    enabled: boolean('enabled').notNull().default(true),
    /** Why the endpoint was disabled automatically (e.g. it answered 410 Gone). */
    disabledReason: text('disabled_reason'),
    secretSealed: text('secret_sealed').notNull(),
    previousSecretSealed: text('previous_secret_sealed'),
    previousSecretExpiresAt: ts('previous_secret_expires_at'),
    version: integer('version').notNull().default(1),
    createdAt: created(),
    updatedAt: updated(),
  },
  (t) => [uniqueIndex('webhook_endpoints_slug_uq').on(t.workspaceId, t.slug), index('webhook_endpoints_ws_idx').on(t.workspaceId, t.id)],
);

/** The secret signing per-trigger callbacks (runs' callbackUrl), one per workspace. */
export const callbackSecrets = pgTable('callback_secrets', {
  workspaceId: text('workspace_id')
    .primaryKey()
    .references(() => workspaces.id, { onDelete: 'cascade' }),
  secretSealed: text('secret_sealed').notNull(),
  previousSecretSealed: text('previous_secret_sealed'),
  previousSecretExpiresAt: ts('previous_secret_expires_at'),
  createdAt: created(),
  updatedAt: updated(),
});

/** One message to one target (an endpoint, or a run's callbackUrl), sent by a durable job. */
export const webhookDeliveries = pgTable(
  'webhook_deliveries',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => workspaces.id, { onDelete: 'cascade' }),
    /** Null for a run's callbackUrl. */
    endpointId: text('endpoint_id').references(() => webhookEndpoints.id, { onDelete: 'cascade' }),
    url: text('url').notNull(),
    /** The `webhook-id` header: the same across retries and redeliveries of one message. */
    messageId: text('message_id').notNull(),
    eventType: text('event_type').notNull(),
    runId: text('run_id'),
    body: text('body').notNull(),
    /** pending (more attempts to come), succeeded, failed (gave up, or the endpoint is gone). */
    status: text('status').notNull(),
    attempts: jsonb('attempts').notNull().default(sql`'[]'::jsonb`),
    nextAttemptAt: ts('next_attempt_at'),
    redeliveryOf: text('redelivery_of'),
    createdAt: created(),
    updatedAt: updated(),
  },
  (t) => [index('webhook_deliveries_endpoint_idx').on(t.endpointId, t.id), index('webhook_deliveries_ws_idx').on(t.workspaceId, t.id), index('webhook_deliveries_created_idx').on(t.createdAt)],
);

/** Slack incoming webhook, PagerDuty Events v2, or plain webhook. */
export const alertChannels = pgTable(
  'alert_channels',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => workspaces.id, { onDelete: 'cascade' }),
    slug: text('slug').notNull(),
    name: text('name').notNull(),
    type: text('type').notNull(),
    config: jsonb('config').notNull(),
    secretsSealed: text('secrets_sealed'),
    secretNames: text('secret_names').array().notNull().default(sql`'{}'::text[]`),
    secretMeta: jsonb('secret_meta').$type<Record<string, { fingerprint: string; updatedAt: string }>>().notNull().default({}),
    version: integer('version').notNull().default(1),
    createdAt: created(),
    updatedAt: updated(),
  },
  (t) => [uniqueIndex('alert_channels_slug_uq').on(t.workspaceId, t.slug), index('alert_channels_ws_idx').on(t.workspaceId, t.id)],
);

/** A sync's alert condition while it holds (open) and after it cleared (resolved). At most one open per (sync, kind). */
export const alerts = pgTable(
  'alerts',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => workspaces.id, { onDelete: 'cascade' }),
    syncId: text('sync_id')
      .notNull()
      .references(() => syncs.id, { onDelete: 'cascade' }),
    kind: text('kind').notNull(),
    status: text('status').notNull(),
    summary: text('summary').notNull(),
    openedRunId: text('opened_run_id').notNull(),
    resolvedRunId: text('resolved_run_id'),
    openedAt: ts('opened_at').notNull().defaultNow(),
    resolvedAt: ts('resolved_at'),
  },
  (t) => [
    uniqueIndex('alerts_open_uq').on(t.syncId, t.kind).where(sql`status = 'open'`),
    index('alerts_ws_idx').on(t.workspaceId, t.id),
  ],
);

/** Row debugger: each destination request of a batch and its response (auth redacted, size-bounded). */
export const runExchanges = pgTable(
  'run_exchanges',
  {
    id: text('id').primaryKey(),
    runId: text('run_id')
      .notNull()
      .references(() => runs.id, { onDelete: 'cascade' }),
    workspaceId: text('workspace_id').notNull(),
    batch: integer('batch').notNull(),
    primaryKeys: text('primary_keys').array().notNull(),
    request: jsonb('request').notNull(),
    response: jsonb('response'),
    durationMs: integer('duration_ms').notNull(),
    createdAt: created(),
  },
  (t) => [index('run_exchanges_batch_idx').on(t.runId, t.batch), index('run_exchanges_created_idx').on(t.createdAt)],
);

// ---- Sequences --------------------------------------------------------------------------------
// An ordered list of syncs run one after another. A sequence run's whole state is in its row (the
// steps' run ids and statuses, the step it waits on), so any worker can carry it on after a restart.

export const sequences = pgTable(
  'sequences',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => workspaces.id, { onDelete: 'cascade' }),
    slug: text('slug').notNull(),
    name: text('name').notNull(),
    schedule: jsonb('schedule').notNull(),
    enabled: boolean('enabled').notNull().default(true),
    /** `stop`: a failed step ends the sequence run; `continue`: the next steps run anyway. */
    onFailure: text('on_failure').notNull().default('stop'),
    version: integer('version').notNull().default(1),
    createdAt: created(),
    updatedAt: updated(),
  },
  (t) => [uniqueIndex('sequences_slug_uq').on(t.workspaceId, t.slug), index('sequences_ws_idx').on(t.workspaceId, t.id)],
);

/** A sequence's steps, in order. A sync in a sequence cannot be deleted (409 resource_in_use). */
export const sequenceSteps = pgTable(
  'sequence_steps',
  {
    sequenceId: text('sequence_id')
      .notNull()
      .references(() => sequences.id, { onDelete: 'cascade' }),
    position: integer('position').notNull(),
    syncId: text('sync_id')
      .notNull()
      // no action, not restrict: checked at the end of the statement, so deleting a workspace
      // (which cascades to both syncs and sequences) works; the service answers 409 before it.
      .references(() => syncs.id),
  },
  (t) => [primaryKey({ columns: [t.sequenceId, t.position] }), index('sequence_steps_sync_idx').on(t.syncId)],
);

export const sequenceRuns = pgTable(
  'sequence_runs',
  {
    id: text('id').primaryKey(),
    workspaceId: text('workspace_id')
      .notNull()
      .references(() => workspaces.id, { onDelete: 'cascade' }),
    sequenceId: text('sequence_id')
      .notNull()
      .references(() => sequences.id, { onDelete: 'cascade' }),
    status: text('status').notNull(),
    trigger: text('trigger').notNull(),
    onFailure: text('on_failure').notNull(),
    /** The steps as they were when the run was triggered: [{ syncId, runId, status, error }]. */
    steps: jsonb('steps').notNull(),
    /** The step being run (index into steps), and the sync run it waits for. */
    currentStep: integer('current_step'),
    currentRunId: text('current_run_id'),
    error: jsonb('error'),
    queuedAt: ts('queued_at').notNull().defaultNow(),
    startedAt: ts('started_at'),
    finishedAt: ts('finished_at'),
    cancelRequestedAt: ts('cancel_requested_at'),
  },
  (t) => [
    index('sequence_runs_sequence_idx').on(t.sequenceId, t.id),
    index('sequence_runs_ws_idx').on(t.workspaceId, t.id),
    // A finishing sync run finds the sequence runs waiting for it (the advance hook in enqueueRunFinished).
    index('sequence_runs_waiting_idx').on(t.currentRunId).where(sql`status = 'running'`),
    // At most one active run per sequence: a trigger returns the active one.
    uniqueIndex('sequence_runs_one_active_uq').on(t.sequenceId).where(sql`status in ('queued', 'running')`),
  ],
);
