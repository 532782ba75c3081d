// The `objects` member of the config of destinations whose objects and fields are declared by
// the user rather than discovered (the HTTP and GraphQL API destinations): one definition for both.

/** One declared field of an object. */
export const declaredFieldSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['name'],
  properties: {
    name: { type: 'string', minLength: 1, maxLength: 200 },
    type: { type: 'string', enum: ['string', 'integer', 'decimal', 'boolean', 'timestamp', 'date', 'json'], default: 'string' },
    required: { type: 'boolean', default: false },
    identifier: { type: 'boolean', default: false },
    equality: {
      type: 'string',
      enum: ['exact', 'case_insensitive'],
      description: 'How the API compares values of this field when it matches records (case_insensitive: trimmed and case-folded, as most CRMs compare emails)',
    },
  },
};

/**
 * JSON Schema of a list of 1–200 declared objects, each with its fields and, per write operation
 * (insert, update, upsert, delete), the destination's own `operationSchema`.
 */
export function declaredObjectsSchema(operationSchema: Record<string, unknown>) {
  return {
    type: 'array',
    minItems: 1,
    maxItems: 200,
    items: {
      type: 'object',
      additionalProperties: false,
      required: ['name', 'fields', 'operations'],
      properties: {
        name: { type: 'string', minLength: 1, maxLength: 200 },
        label: { type: 'string', maxLength: 200 },
        fields: { type: 'array', maxItems: 1000, items: declaredFieldSchema },
        operations: {
          type: 'object',
          additionalProperties: false,
          minProperties: 1,
          properties: { insert: operationSchema, update: operationSchema, upsert: operationSchema, delete: operationSchema },
        },
      },
    },
  };
}
