import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { ModelCreate, ModelPatch, ModelPut, ModelView } from '../../domain/models.ts';
import type { Services } from '../../domain/services.ts';
import { actorOf } from '../auth.ts';
import { registerCrud } from '../crud.ts';
import { problems, RefParams, ListOrderQuery } from '../schemas.ts';

const ColumnSchema = Type.Object({ name: Type.String(), type: Type.String(), nativeType: Type.String() });
const validateOpt = (q: Record<string, unknown>) => ({ validate: q.validate !== false });

export function modelRoutes(app: FastifyInstance, s: Services): void {
  registerCrud(
    app,
    {
      path: '/v1/models',
      tag: 'models',
      noun: 'model',
      op: { one: 'Model', many: 'Models' },
      view: ModelView,
      create: ModelCreate,
      patch: ModelPatch,
      replace: ModelPut,
      listFilters: { ...ListOrderQuery, connectionId: Type.Optional(Type.String({ maxLength: 100 })) },
      writeQuery: { validate: Type.Optional(Type.Boolean({ default: true, description: 'Check the SQL and primary key against the source before saving' })) },
    },
    {
      list: (a, q) => s.models.list(a, q),
      get: (a, ref) => s.models.get(a, ref),
      create: (a, body, q) => s.models.create(a, body, validateOpt(q)),
      update: (a, ref, body, ifMatch, q) => s.models.update(a, ref, body, ifMatch, validateOpt(q)),
      put: async (a, ref, body, ifMatch, q, opts) => {
        const r = await s.models.put(a, ref, body, ifMatch, { ...validateOpt(q), ...opts });
        return { created: r.created, value: r.model };
      },
      delete: (a, ref, ifMatch) => s.models.delete(a, ref, ifMatch),
    },
  );

  app.post('/v1/models/:ref/preview', {
    schema: {
      tags: ['models'],
      operationId: 'previewModel', summary: "Run the model's query and return its first rows",
      params: RefParams,
      body: Type.Optional(
        Type.Object(
          { limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })), timeoutMs: Type.Optional(Type.Integer({ minimum: 100, maximum: 60_000 })) },
          { additionalProperties: false },
        ),
      ),
      response: {
        200: Type.Object({
          columns: Type.Array(ColumnSchema),
          rows: Type.Array(Type.Object({}, { additionalProperties: true })),
          truncated: Type.Optional(
            Type.Object(
              {
                values: Type.Integer({ description: 'Values cut to maxValueBytes (each ends with "…")' }),
                rowsOmitted: Type.Boolean({ description: 'Rows left out because the total reached maxTotalBytes' }),
                maxValueBytes: Type.Integer(),
                maxTotalBytes: Type.Integer(),
              },
              { description: 'Present when the preview was cut to its bounds' },
            ),
          ),
        }),
        ...problems,
      },
    },
    handler: async (req) => s.models.preview(actorOf(req), (req.params as { ref: string }).ref, (req.body ?? {}) as { limit?: number; timeoutMs?: number }),
  });

  app.get('/v1/models/:ref/columns', {
    schema: { tags: ['models'], operationId: 'listModelColumns', summary: "The columns of the model's result", params: RefParams, response: { 200: Type.Object({ data: Type.Array(ColumnSchema) }), ...problems } },
    handler: async (req) => ({ data: await s.models.columns(actorOf(req), (req.params as { ref: string }).ref) }),
  });
}
