import { Type, type Static } from '@sinclair/typebox';
import type { ConnectionCreateInput } from '../connections.ts';
import type { ModelCreateInput } from '../models.ts';
import type { SyncCreateInput } from '../syncs.ts';
import type { WebhookEndpointCreateInput } from '../webhooks.ts';
import type { AlertChannelCreateInput } from '../alert-channels.ts';
import type { SequenceCreateInput } from '../sequences.ts';

// A declarative bundle: the configuration of one workspace as data (YAML for the CLI, JSON on the
// wire). Each item is the body a create of that resource takes (the same schemas), and items refer
// to each other by slug (ids are accepted too): a model's `connectionId`, a sync's `modelId`,
// `destinationId` and `alerts.channelIds`, a webhook endpoint's `syncIds`, a sequence's steps' `syncId`.

export const BUNDLE_API_VERSION = 'backhaul/v1';

/**
 * The kinds a bundle holds, in the order creates and updates are applied (what is referred to
 * first); deletes (prune) go in the reverse order: a sequence before the syncs it runs (a sync
 * that is a step of a sequence cannot be deleted, 409 resource_in_use).
 */
export const KINDS = ['connection', 'alertChannel', 'model', 'sync', 'webhookEndpoint', 'sequence'] as const;
export type Kind = (typeof KINDS)[number];

/** The bundle member that lists each kind. */
export const MEMBER: Record<Kind, 'connections' | 'alertChannels' | 'models' | 'syncs' | 'webhookEndpoints' | 'sequences'> = {
  connection: 'connections',
  alertChannel: 'alertChannels',
  model: 'models',
  sync: 'syncs',
  webhookEndpoint: 'webhookEndpoints',
  sequence: 'sequences',
};

const Item = (what: string) => Type.Object({}, { additionalProperties: true, description: what });

/**
 * The bundle's envelope, as the domain checks it first; each item is then checked against its
 * resource's create schema, with paths into the bundle (`/syncs/2/mode`). The REST route's body
 * schema (src/http/routes/declarative.ts) names the item schemas for the OpenAPI document.
 */
export const BundleEnvelope = Type.Object(
  {
    apiVersion: Type.Optional(Type.Literal(BUNDLE_API_VERSION)),
    prune: Type.Optional(Type.Boolean()),
    connections: Type.Optional(Type.Array(Item('connection'), { maxItems: 1000 })),
    alertChannels: Type.Optional(Type.Array(Item('alert channel'), { maxItems: 1000 })),
    models: Type.Optional(Type.Array(Item('model'), { maxItems: 1000 })),
    syncs: Type.Optional(Type.Array(Item('sync'), { maxItems: 1000 })),
    webhookEndpoints: Type.Optional(Type.Array(Item('webhook endpoint'), { maxItems: 1000 })),
    sequences: Type.Optional(Type.Array(Item('sequence'), { maxItems: 1000 })),
  },
  { additionalProperties: false },
);

export interface Bundle {
  apiVersion?: typeof BUNDLE_API_VERSION;
  /** The bundle is the whole workspace: resources it does not list are deleted. Default false (they are left alone). */
  prune?: boolean;
  connections?: ConnectionCreateInput[];
  alertChannels?: AlertChannelCreateInput[];
  models?: ModelCreateInput[];
  syncs?: SyncCreateInput[];
  webhookEndpoints?: WebhookEndpointCreateInput[];
  sequences?: SequenceCreateInput[];
}

export const FieldChange = Type.Object(
  {
    field: Type.String({ description: 'Dotted path of the field, e.g. `config.host`, `mappings.firstname`, `secrets.password`' }),
    before: Type.Optional(Type.Unknown({ description: 'The value on the server (absent: not set); never shown for secrets' })),
    after: Type.Optional(Type.Unknown({ description: 'The value in the bundle (absent: unset); never shown for secrets' })),
    secret: Type.Optional(Type.Boolean({ description: 'A secret: its values are never shown; the change is detected by fingerprint' })),
  },
  { additionalProperties: false },
);
const KindSchema = Type.Union(KINDS.map((k) => Type.Literal(k)));
export const PlannedChange = Type.Object(
  {
    action: Type.Union([Type.Literal('create'), Type.Literal('update'), Type.Literal('delete')]),
    kind: KindSchema,
    slug: Type.String(),
    id: Type.Union([Type.String(), Type.Null()], { description: 'The resource on the server (null for a create)' }),
    expectedVersion: Type.Union([Type.Integer(), Type.Null()], { description: 'The version the update or delete is made against (If-Match); null for a create (If-None-Match: *)' }),
    bundlePath: Type.Union([Type.String(), Type.Null()], { description: 'JSON pointer of the item in the bundle (null for a delete)' }),
    fields: Type.Array(FieldChange, { description: 'update: each field that differs; create: the fields set' }),
  },
  { additionalProperties: false },
);
const Summary = Type.Object({ create: Type.Integer(), update: Type.Integer(), delete: Type.Integer(), unchanged: Type.Integer() });
export const PlanView = Type.Object(
  {
    planHash: Type.String({ description: 'Identifies this plan (changes and expected versions): send it as If-Match to POST /v1/apply to apply exactly what was reviewed' }),
    prune: Type.Boolean(),
    changes: Type.Array(PlannedChange),
    summary: Summary,
  },
  { $id: 'Plan', additionalProperties: false },
);
export const ApplyResult = Type.Object(
  {
    planHash: Type.String(),
    applied: Type.Array(
      Type.Object({
        ...PlannedChange.properties,
        version: Type.Union([Type.Integer(), Type.Null()], { description: 'The version after the write (null for a delete)' }),
        resultId: Type.Union([Type.String(), Type.Null()], { description: 'The id of the created or updated resource' }),
      }),
    ),
    summary: Summary,
  },
  { $id: 'ApplyResult' },
);

export type FieldChangeT = Static<typeof FieldChange>;
export type PlannedChangeT = Static<typeof PlannedChange>;
export type PlanT = Static<typeof PlanView>;
export type ApplyResultT = Static<typeof ApplyResult>;
