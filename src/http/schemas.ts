import { Type, type TSchema } from '@sinclair/typebox';

import { MappingPut } from '../domain/mappings.ts';
import { ProblemCodeSchema } from './problem-codes.ts';

// Schemas shared by the routes (OpenAPI components).

/** Components added by the API contract work (issue 16); app.ts registers them with the others. */
export const CONTRACT_SCHEMAS: TSchema[] = [ProblemCodeSchema, MappingPut];

export const ProblemSchema = Type.Object(
  {
    type: Type.String(),
    title: Type.String(),
    status: Type.Integer(),
    detail: Type.String(),
    code: Type.Unsafe<string>({ $ref: 'ProblemCode#' }),
    errors: Type.Optional(Type.Array(Type.Object({ path: Type.String(), message: Type.String() }))),
    hint: Type.Optional(Type.String()),
    requestId: Type.Optional(Type.String()),
  },
  { $id: 'Problem', additionalProperties: true },
);

export const ref = (schema: TSchema) => Type.Unsafe({ $ref: `${schema.$id}#` });

export const PageQuery = {
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 200, default: 50 })),
  cursor: Type.Optional(Type.String({ maxLength: 500 })),
};

export const pageOf = (item: TSchema) =>
  Type.Object({ data: Type.Array(ref(item)), nextCursor: Type.Union([Type.String(), Type.Null()]) });

export const RefParams = Type.Object({ ref: Type.String({ minLength: 1, maxLength: 100, description: 'Id or slug' }) });

export const IfMatchHeader = Type.Object({
  'if-match': Type.Optional(Type.String({ description: 'ETag (version) the change applies to; 412 when it is not current' })),
});
export const PutHeaders = Type.Object({
  ...IfMatchHeader.properties,
  'if-none-match': Type.Optional(
    Type.String({ description: '`*`: create only (412 already_exists when the resource exists); ETags: 412 version_matches when one is the current version (RFC 9110 §13.1.2)' }),
  ),
});
export const IdempotencyHeader = Type.Object({
  'idempotency-key': Type.Optional(Type.String({ maxLength: 255, description: 'Retries with the same key and body return the first response (24 h)' })),
});

const problemResponse = (description: string) => ({ description, content: { 'application/problem+json': { schema: ref(ProblemSchema) } } });

/** Standard error responses of every route (RFC 9457 problem details). */
export const problems = {
  '4xx': problemResponse('Client error: problem details with a stable `code`'),
  '5xx': problemResponse('Server error: problem details, nothing internal'),
};

/** Ordering and search for the main resource lists (see src/domain/list.ts). */
export const ListOrderQuery = {
  orderBy: Type.Optional(Type.Union([Type.Literal('createdAt'), Type.Literal('name'), Type.Literal('slug'), Type.Literal('updatedAt')], { default: 'createdAt' })),
  direction: Type.Optional(Type.Union([Type.Literal('asc'), Type.Literal('desc')], { default: 'asc' })),
  search: Type.Optional(Type.String({ minLength: 1, maxLength: 200, description: 'Case-insensitive substring of the name or slug' })),
};
