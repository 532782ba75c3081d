import {
  getNamedType,
  getNullableType,
  isInterfaceType,
  isLeafType,
  isListType,
  isObjectType,
  Kind,
  type ASTVisitor,
  type DocumentNode,
  type FieldNode,
  type FragmentDefinitionNode,
  type GraphQLCompositeType,
  type GraphQLError,
  type GraphQLSchema,
  type SelectionSetNode,
  type ValidationContext,
  type ValueNode,
} from 'graphql';
import { limitError } from './errors.ts';

// Bounds on what one GraphQL operation may ask for, checked before anything runs:
// - depth: nesting of fields (introspection fields excluded), code `query_too_deep`;
// - cost: an estimate of the objects an operation can touch, code `query_too_complex`. Every
//   field returning an object costs 1 per parent it is resolved for; a paged list (a `…Connection`)
//   multiplies what is below it by `first` (default 50), another list by its size estimate
//   (`ids` length for nodes, else 20); fields that reach a remote system cost more;
// - aliases, code `too_many_aliases`;
// - batched operations per HTTP request, code `too_many_operations` (checked by the route).
// Query size is bounded by the HTTP body limit.

export interface GraphqlLimits {
  maxDepth: number;
  maxCost: number;
  maxAliases: number;
  maxBatch: number;
}

export const DEFAULT_LIMITS: GraphqlLimits = { maxDepth: 10, maxCost: 10_000, maxAliases: 30, maxBatch: 10 };

const DEFAULT_PAGE = 50;
const DEFAULT_LIST = 20;
/** Fields that reach a source or destination system: each call is worth many database reads. */
const REMOTE_COST: Record<string, number> = {
  'Model.columns': 50,
  'Model.preview': 50,
  'Connection.destinationObjects': 50,
  'Connection.destinationFields': 50,
};

export interface Analysis {
  depth: number;
  cost: number;
  aliases: number;
}

function argValue(node: FieldNode, name: string, variables: Record<string, unknown>): unknown {
  const arg = node.arguments?.find((a) => a.name.value === name);
  if (!arg) return undefined;
  const v: ValueNode = arg.value;
  if (v.kind === Kind.VARIABLE) return variables[v.name.value];
  if (v.kind === Kind.INT) return Number.parseInt(v.value, 10);
  if (v.kind === Kind.LIST) return v.values;
  return undefined;
}

function positive(n: unknown): number | undefined {
  return typeof n === 'number' && Number.isFinite(n) && n > 0 ? Math.ceil(n) : undefined;
}

/** Analyses every operation of the document (the one executed is among them). */
export function analyse(schema: GraphQLSchema, doc: DocumentNode, variables: Record<string, unknown> = {}): Analysis {
  const fragments = new Map<string, FragmentDefinitionNode>();
  for (const d of doc.definitions) if (d.kind === Kind.FRAGMENT_DEFINITION) fragments.set(d.name.value, d);
  let aliases = 0;
  const countedAliases = new Set<FieldNode>();

  // Returns [depth below, cost] of a selection set resolved `multiplier` times.
  const walk = (set: SelectionSetNode, parent: GraphQLCompositeType, multiplier: number, visiting: Set<string>): [number, number] => {
    let depth = 0;
    let cost = 0;
    for (const sel of set.selections) {
      if (sel.kind === Kind.FIELD) {
        const name = sel.name.value;
        if (name.startsWith('__')) continue; // __typename is free; introspection is not limited here
        if (sel.alias && !countedAliases.has(sel)) {
          countedAliases.add(sel);
          aliases++;
        }
        if (!isObjectType(parent) && !isInterfaceType(parent)) continue;
        const def = parent.getFields()[name];
        if (!def) continue; // unknown field: the standard validation reports it
        const named = getNamedType(def.type);
        if (isLeafType(named) || !sel.selectionSet) {
          depth = Math.max(depth, 1);
          continue;
        }
        const nullable = getNullableType(def.type);
        let factor = 1;
        if (named.name.endsWith('Connection') || named.name.endsWith('List')) {
          factor = positive(argValue(sel, 'first', variables)) ?? DEFAULT_PAGE;
        } else if (isListType(nullable) && !parent.name.endsWith('Connection') && !parent.name.endsWith('List')) {
          const ids = argValue(sel, 'ids', variables);
          factor = Array.isArray(ids) ? Math.max(ids.length, 1) : DEFAULT_LIST;
        }
        const own = multiplier * (1 + (REMOTE_COST[`${parent.name}.${name}`] ?? 0));
        const [d, c] = walk(sel.selectionSet, named as GraphQLCompositeType, multiplier * factor, visiting);
        depth = Math.max(depth, d + 1);
        cost += own + c;
      } else if (sel.kind === Kind.INLINE_FRAGMENT) {
        const type = sel.typeCondition ? (schema.getType(sel.typeCondition.name.value) as GraphQLCompositeType | undefined) : parent;
        if (!type) continue;
        const [d, c] = walk(sel.selectionSet, type, multiplier, visiting);
        depth = Math.max(depth, d);
        cost += c;
      } else {
        const name = sel.name.value;
        const frag = fragments.get(name);
        if (!frag || visiting.has(name)) continue; // cycles are reported by the standard rules
        const type = schema.getType(frag.typeCondition.name.value) as GraphQLCompositeType | undefined;
        if (!type) continue;
        visiting.add(name);
        const [d, c] = walk(frag.selectionSet, type, multiplier, visiting);
        visiting.delete(name);
        depth = Math.max(depth, d);
        cost += c;
      }
    }
    return [depth, cost];
  };

  let depth = 0;
  let cost = 0;
  for (const d of doc.definitions) {
    if (d.kind !== Kind.OPERATION_DEFINITION) continue;
    const root = d.operation === 'query' ? schema.getQueryType() : d.operation === 'mutation' ? schema.getMutationType() : schema.getSubscriptionType();
    if (!root) continue;
    const [dd, cc] = walk(d.selectionSet, root, 1, new Set());
    depth = Math.max(depth, dd);
    cost = Math.max(cost, cc);
  }
  return { depth, cost, aliases };
}

export function limitErrors(a: Analysis, limits: GraphqlLimits): GraphQLError[] {
  const errors: GraphQLError[] = [];
  if (a.depth > limits.maxDepth) {
    errors.push(limitError('query_too_deep', `The query is ${a.depth} levels deep; the limit is ${limits.maxDepth}.`, { depth: a.depth, limit: limits.maxDepth }));
  }
  if (a.cost > limits.maxCost) {
    errors.push(
      limitError('query_too_complex', `The query's estimated cost is ${a.cost}; the limit is ${limits.maxCost}. Ask for smaller pages (first) or fewer nested lists.`, {
        cost: a.cost,
        limit: limits.maxCost,
      }),
    );
  }
  if (a.aliases > limits.maxAliases) {
    errors.push(limitError('too_many_aliases', `The query uses ${a.aliases} aliases; the limit is ${limits.maxAliases}.`, { aliases: a.aliases, limit: limits.maxAliases }));
  }
  return errors;
}

/** A graphql-js validation rule applying the limits with the request's variables. */
export function limitsRule(limits: GraphqlLimits, variables: Record<string, unknown> | undefined) {
  return (context: ValidationContext): ASTVisitor => ({
    Document: {
      leave(doc) {
        for (const e of limitErrors(analyse(context.getSchema(), doc, variables ?? {}), limits)) context.reportError(e);
      },
    },
  });
}
