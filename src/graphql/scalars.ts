import { GraphQLError, Kind, type ObjectFieldNode, type ValueNode } from 'graphql';

// JSON and DateTime. JSON literals become plain objects (never null-prototype ones), so the
// services' validators see exactly what a REST body would have given them.

function literal(node: ValueNode, variables: Record<string, unknown> | null | undefined): unknown {
  switch (node.kind) {
    case Kind.STRING:
    case Kind.BOOLEAN:
      return node.value;
    case Kind.INT:
      return Number.parseInt(node.value, 10);
    case Kind.FLOAT:
      return Number.parseFloat(node.value);
    case Kind.NULL:
      return null;
    case Kind.ENUM:
      return node.value;
    case Kind.LIST:
      return node.values.map((v) => literal(v, variables));
    case Kind.OBJECT: {
      const out: Record<string, unknown> = {};
      for (const f of node.fields as readonly ObjectFieldNode[]) out[f.name.value] = literal(f.value, variables);
      return out;
    }
    case Kind.VARIABLE:
      return variables ? variables[node.name.value] : undefined;
  }
}

export const JSONScalar = {
  serialize: (v: unknown) => v,
  parseValue: (v: unknown) => v,
  parseLiteral: (node: ValueNode, variables?: Record<string, unknown> | null) => literal(node, variables),
};

export const DateTimeScalar = {
  serialize(v: unknown): string {
    if (v instanceof Date) return v.toISOString();
    if (typeof v === 'string') return v;
    throw new GraphQLError('DateTime must be an ISO-8601 string.');
  },
  parseValue(v: unknown): string {
    if (typeof v === 'string' && !Number.isNaN(Date.parse(v))) return new Date(v).toISOString();
    throw new GraphQLError('DateTime must be an ISO-8601 timestamp, e.g. 2024-05-01T12:00:00Z.');
  },
  parseLiteral(node: ValueNode): string {
    if (node.kind === Kind.STRING && !Number.isNaN(Date.parse(node.value))) return new Date(node.value).toISOString();
    throw new GraphQLError('DateTime must be an ISO-8601 timestamp, e.g. 2024-05-01T12:00:00Z.');
  },
};

/** A deep plain copy of a coerced GraphQL input: drops absent (undefined) fields, keeps nulls. */
export function plain(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(plain);
  if (v !== null && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) if (x !== undefined) out[k] = plain(x);
    return out;
  }
  return v;
}
