import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { ApiKeyCreate, ApiKeyCreated, ApiKeyView, WorkspaceCreate, WorkspaceView } from '../../domain/api-keys.ts';
import { listAuditEvents } from '../../domain/audit.ts';
import type { Services } from '../../domain/services.ts';
import { listConnectorTypes } from '../../connectors/registry.ts';
import { actorOf } from '../auth.ts';
import { IdempotencyHeader, PageQuery, pageOf, problems, ref } from '../schemas.ts';
import { requireScope } from '../../domain/common.ts';

// Workspaces, API keys, the connector catalog and the audit log.
export function adminRoutes(app: FastifyInstance, s: Services): void {
  app.get('/v1/workspaces', {
    schema: { tags: ['workspaces'], operationId: 'listWorkspaces', summary: 'List workspaces (owner key)', querystring: Type.Object(PageQuery), response: { 200: pageOf(WorkspaceView), ...problems } },
    handler: async (req) => s.apiKeys.listWorkspaces(actorOf(req), req.query as { limit?: number }),
  });
  app.post('/v1/workspaces', {
    schema: {
      tags: ['workspaces'],
      operationId: 'createWorkspace', summary: 'Create a workspace and its first admin key (owner key)',
      headers: IdempotencyHeader,
      body: ref(WorkspaceCreate),
      response: { 201: Type.Object({ workspace: ref(WorkspaceView), apiKey: ref(ApiKeyCreated) }), ...problems },
    },
    handler: async (req, reply) => reply.code(201).send(await s.apiKeys.createWorkspace(actorOf(req), req.body as never)),
  });

  app.get('/v1/api-keys', {
    schema: { tags: ['api-keys'], operationId: 'listApiKeys', summary: 'List API keys (admin)', querystring: Type.Object(PageQuery), response: { 200: pageOf(ApiKeyView), ...problems } },
    handler: async (req) => s.apiKeys.list(actorOf(req), req.query as { limit?: number }),
  });
  app.post('/v1/api-keys', {
    schema: { tags: ['api-keys'], operationId: 'createApiKey', summary: 'Create an API key (admin); the token is returned once', headers: IdempotencyHeader, body: ref(ApiKeyCreate), response: { 201: ref(ApiKeyCreated), ...problems } },
    handler: async (req, reply) => reply.code(201).send(await s.apiKeys.create(actorOf(req), req.body as never)),
  });
  app.delete('/v1/api-keys/:id', {
    schema: { tags: ['api-keys'], operationId: 'revokeApiKey', summary: 'Revoke an API key (admin)', params: Type.Object({ id: Type.String({ maxLength: 100 }) }), response: { 204: Type.Null(), ...problems } },
    handler: async (req, reply) => {
      await s.apiKeys.revoke(actorOf(req), (req.params as { id: string }).id);
      return reply.code(204).send();
    },
  });

  app.get('/v1/connectors', {
    schema: {
      tags: ['connectors'],
      operationId: 'listConnectors', summary: 'The connector catalog: types, roles, config JSON Schemas, secrets and capabilities',
      response: {
        200: Type.Object({
          data: Type.Array(
            Type.Object({
              type: Type.String(),
              label: Type.String(),
              roles: Type.Array(Type.String()),
              configSchema: Type.Object({}, { additionalProperties: true }),
              secrets: Type.Array(Type.Object({ name: Type.String(), required: Type.Boolean(), description: Type.String() })),
              capabilities: Type.Union([Type.Object({}, { additionalProperties: true }), Type.Null()]),
              oauth: Type.Union(
                [
                  Type.Object(
                    { provider: Type.String(), authorizeUrl: Type.String(), tokenUrl: Type.String(), scopes: Type.Array(Type.String()) },
                    { description: 'Connections of this type can be connected with POST /v1/connections/{ref}/oauth/start (client: BACKHAUL_<PROVIDER>_CLIENT_ID/_SECRET)' },
                  ),
                  Type.Null(),
                ],
              ),
            }),
          ),
        }),
        ...problems,
      },
    },
    handler: async (req) => {
      requireScope(actorOf(req), 'read');
      return {
        data: listConnectorTypes().map((t) => ({
          type: t.type,
          label: t.label,
          roles: t.roles,
          configSchema: t.configSchema,
          secrets: t.secrets,
          capabilities: t.capabilities ?? null,
          oauth: t.oauth ? { provider: t.oauth.name, authorizeUrl: t.oauth.authorizeUrl, tokenUrl: t.oauth.tokenUrl, scopes: t.oauth.scopes } : null,
        })),
      };
    },
  });

  app.get('/v1/audit-events', {
    schema: {
      tags: ['audit'],
      operationId: 'listAuditEvents', summary: 'Who changed what, newest first',
      querystring: Type.Object({
        ...PageQuery,
        resourceType: Type.Optional(Type.String({ maxLength: 50 })),
        resourceId: Type.Optional(Type.String({ maxLength: 100 })),
        since: Type.Optional(Type.String({ format: 'date-time' })),
        until: Type.Optional(Type.String({ format: 'date-time' })),
      }),
      response: {
        200: Type.Object({
          data: Type.Array(
            Type.Object({
              id: Type.String(),
              action: Type.String(),
              resourceType: Type.String(),
              resourceId: Type.String(),
              changedFields: Type.Array(Type.String()),
              actorKeyId: Type.Union([Type.String(), Type.Null()]),
              requestId: Type.Union([Type.String(), Type.Null()]),
              createdAt: Type.String({ format: 'date-time' }),
            }),
          ),
          nextCursor: Type.Union([Type.String(), Type.Null()]),
        }),
        ...problems,
      },
    },
    handler: async (req) => listAuditEvents(s.deps.database.db, actorOf(req), req.query as never),
  });
}
