import { ApiKeyService } from './api-keys.ts';
import { ConnectionService } from './connections.ts';
import type { ServiceDeps } from './deps.ts';
import { MappingService } from './mappings.ts';
import { ModelService } from './models.ts';
import { RunService } from './runs.ts';
import { RunWaiter, Waiter } from './run-waiter.ts';
import { SyncService } from './syncs.ts';
import { SEQUENCE_RUN_CHANNEL, SequenceService, sequenceRunView, type SequenceRunViewT } from './sequences.ts';
import { sequenceRuns } from '../db/schema.ts';
import { eq } from 'drizzle-orm';
import { NotFoundError } from '../errors.ts';
import { AlertChannelService } from './alert-channels.ts';
import { AlertService } from './alerts.ts';
import { WebhookService } from './webhooks.ts';
import { Metrics } from '../lib/metrics.ts';
import { OAuthService } from './oauth.ts';
import { DeclarativeService } from './declarative/service.ts';

// The one service layer. REST routes, GraphQL resolvers and worker tasks all call these.
export interface Services {
  deps: ServiceDeps;
  apiKeys: ApiKeyService;
  connections: ConnectionService;
  models: ModelService;
  syncs: SyncService;
  mappings: MappingService;
  runs: RunService;
  sequences: SequenceService;
  /** Long-polls runs until terminal (one LISTEN per process). */
  runWaiter: RunWaiter;
  /** Long-polls sequence runs until terminal (GET /v1/sequence-runs/{id}?wait=). */
  sequenceRunWaiter: Waiter<typeof sequenceRuns.$inferSelect, SequenceRunViewT>;
  webhooks: WebhookService;
  alertChannels: AlertChannelService;
  alerts: AlertService;
  metrics: Metrics;
  oauth: OAuthService;
  /** Export, plan and apply of declarative bundles (over the services above). */
  declarative: DeclarativeService;
}

export function createServices(deps: ServiceDeps): Services {
  const connections = new ConnectionService(deps);
  const syncs = new SyncService(deps, connections);
  const models = new ModelService(deps, connections);
  const mappings = new MappingService(deps, syncs, connections, models);
  syncs.mappings = mappings;
  const runs = new RunService(deps, syncs);
  const webhooks = new WebhookService(deps);
  const alertChannels = new AlertChannelService(deps);
  const sequences = new SequenceService(deps, runs, webhooks);
  syncs.sequences = sequences;
  return {
    deps,
    apiKeys: new ApiKeyService(deps),
    connections,
    models,
    syncs,
    mappings,
    runs,
    sequences,
    runWaiter: new RunWaiter(deps, runs),
    sequenceRunWaiter: new Waiter(deps, {
      channel: SEQUENCE_RUN_CHANNEL,
      idField: 'sequenceRunId',
      load: (workspaceId, id) => sequences.runRow(deps.database.db, workspaceId, id),
      reread: async (id) => (await deps.database.db.select().from(sequenceRuns).where(eq(sequenceRuns.id, id)))[0],
      isTerminal: (r) => ['succeeded', 'failed', 'cancelled'].includes(r.status),
      view: sequenceRunView,
      notFound: (id) => new NotFoundError('sequence run', id),
    }),
    webhooks,
    alertChannels,
    alerts: new AlertService(deps),
    metrics: new Metrics(deps.database),
    oauth: new OAuthService(deps, connections),
    declarative: new DeclarativeService(deps, { connections, models, syncs, mappings, webhooks, alertChannels, sequences }),
  };
}
