import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { ConnectionCreate } from '../../domain/connections.ts';
import { ModelCreate } from '../../domain/models.ts';
import { SyncCreate } from '../../domain/syncs.ts';
import { WebhookEndpointCreate } from '../../domain/webhooks.ts';
import { AlertChannelCreate } from '../../domain/alert-channels.ts';
import { SequenceCreate } from '../../domain/sequences.ts';
import { ApplyResult, BUNDLE_API_VERSION, PlanView } from '../../domain/declarative/bundle.ts';
import type { Services } from '../../domain/services.ts';
import { actorOf } from '../auth.ts';
import { problems, ref } from '../schemas.ts';

// Declarative configuration: GET /v1/export, POST /v1/plan, POST /v1/apply (src/domain/declarative).

const list = (item: Parameters<typeof ref>[0], what: string) => Type.Optional(Type.Array(ref(item), { maxItems: 1000, description: `${what}, each the body its create takes; references by slug` }));

/** A bundle as the OpenAPI document shows it: the items are the create bodies of their resources. */
export const BundleSchema = Type.Object(
  {
    apiVersion: Type.Optional(Type.Literal(BUNDLE_API_VERSION)),
    prune: Type.Optional(
      Type.Boolean({ default: false, description: 'The bundle is the whole workspace: resources of these kinds that it does not list are deleted. Default false: they are left alone.' }),
    ),
    connections: list(ConnectionCreate, 'Connections (secrets as `{ "env": NAME }` references; secrets not named are kept)'),
    alertChannels: list(AlertChannelCreate, 'Alert channels (secrets as `{ "env": NAME }` references; secrets not named are kept)'),
    models: list(ModelCreate, 'Models (`connectionId`: a slug)'),
    syncs: list(SyncCreate, 'Syncs with their mappings (`modelId`, `destinationId`, `alerts.channelIds`: slugs)'),
    webhookEndpoints: list(WebhookEndpointCreate, 'Webhook endpoints (`syncIds`: slugs; `secret` omitted: kept)'),
    sequences: list(SequenceCreate, "Sequences (steps' `syncId`: slugs)"),
  },
  { $id: 'Bundle', additionalProperties: false, description: 'A workspace\'s configuration as data (YAML in the CLI)' },
);

// The export's answer: the same members, items as free objects. (A response schema that named the
// create schemas would make the serializer fill in their `default`s, e.g. a PagerDuty eventsUrl
// on a webhook channel: the export must be exactly the stored configuration.)
const loose = (what: string) => Type.Array(Type.Object({}, { additionalProperties: true }), { description: `${what}: items as in Bundle` });
export const ExportedBundle = Type.Object(
  {
    apiVersion: Type.Literal(BUNDLE_API_VERSION),
    connections: loose('Connections'),
    alertChannels: loose('Alert channels'),
    models: loose('Models'),
    syncs: loose('Syncs with their mappings'),
    webhookEndpoints: loose('Webhook endpoints'),
    sequences: loose('Sequences'),
  },
  { $id: 'ExportedBundle', description: 'A Bundle (see its schema) holding every resource of the workspace, sorted by slug' },
);

/** Components of these routes (app.ts registers them with the others). */
export const DECLARATIVE_SCHEMAS = [BundleSchema, ExportedBundle, PlanView, ApplyResult];

/** A bundle holds a whole workspace: it may be larger than other bodies (BACKHAUL_BODY_LIMIT_BYTES when that is larger). */
export const BUNDLE_BODY_LIMIT_BYTES = 16 * 1024 * 1024;

export function declarativeRoutes(app: FastifyInstance, s: Services): void {
  const tags = ['declarative'];
  const bodyLimit = Math.max(app.initialConfig.bodyLimit ?? 0, BUNDLE_BODY_LIMIT_BYTES);
  app.get('/v1/export', {
    schema: {
      tags,
      operationId: 'exportBundle',
      summary: "The workspace's configuration as a bundle (references by slug; secret values never)",
      response: { 200: ref(ExportedBundle), ...problems },
    },
    handler: async (req) => s.declarative.export(actorOf(req)),
  });
  app.post('/v1/plan', {
    bodyLimit,
    schema: {
      tags,
      operationId: 'planBundle',
      summary: 'What applying a bundle would change: creates, updates field by field, deletes (with prune); nothing is written',
      body: ref(BundleSchema),
      response: { 200: ref(PlanView), ...problems },
    },
    handler: async (req) => s.declarative.plan(actorOf(req), req.body),
  });
  app.post('/v1/apply', {
    bodyLimit,
    schema: {
      tags,
      operationId: 'applyBundle',
      summary: 'Apply a bundle in one transaction (all or nothing); If-Match: a planHash makes it apply only that reviewed plan',
      headers: Type.Object({
        'if-match': Type.Optional(Type.String({ description: 'The planHash of POST /v1/plan: 412 plan_changed (nothing applied) when the plan is no longer the same' })),
      }),
      body: ref(BundleSchema),
      response: { 200: ref(ApplyResult), ...problems },
    },
    handler: async (req) => s.declarative.apply(actorOf(req), req.body, req.headers['if-match']),
  });
}
