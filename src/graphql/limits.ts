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
// - size: at most `maxTokens` lexical tokens (graphql-js' parser option), code `query_too_large`:
//   parsing and the standard validation rules are linear-to-quadratic in the document, so this
//   bounds the CPU one request can take before any of our rules run;
// - depth: nesting of fields (introspection fields excluded), code `query_too_deep`;
// - cost: an estimate of the objects an operation can touch, code `query_too_complex`. Every
//   field returning an object costs 1 per parent it is resolved for; a paged list (a `…Connection`)
//   multiplies what is below it by `first` (default 50), another list by its size estimate
//   (`ids` length for nodes, else 20); fields that reach a remote system cost more;
// - aliases, code `too_many_aliases`;
// - fields in one selection set once its fragments are expanded, code `too_many_fields`: graphql-js'
//   OverlappingFieldsCanBeMerged rule compares those fields pairwise (the same field repeated
//   thousands of times took seconds), so this bounds its work;
// - brackets nested in the source (literals included), code `query_too_deep`, checked before parsing;
// - batched operations per HTTP request, code `too_many_operations` (checked by the route).
//
// The analysis is linear in the document whatever its shape: each fragment is costed once (a
// spread reuses its cost, times the spread's multiplier), fragments are evaluated in dependency
// order without recursion through spreads, field nesting is followed at most HARD_DEPTH levels,
// and the cost walk stops as soon as the cost is over the limit. The rule runs when the
// document is entered, before the standard rules visit it, and aborts validation when a limit is
// exceeded, so the standard rules never work on an oversized document. (Before, `fragment Fn {
// ...Fn-1 ...Fn-1 }` chains were walked 2^n times and blocked the process for seconds.)

export interface GraphqlLimits {
  maxDepth: number;
  maxCost: number;
  maxAliases: number;
  maxBatch: number;
  /** Lexical tokens per document (parser limit). */
  maxTokens: number;
  /** Fields of one selection set, counted once its fragments are expanded. */
  maxFields: number;
  /** Brackets (`{`, `[`, `(`) nested in the source, literals included; checked before parsing. */
  maxNesting: number;
}

export const DEFAULT_LIMITS: GraphqlLimits = { maxDepth: 10, maxCost: 10_000, maxAliases: 30, maxBatch: 10, maxTokens: 10_000, maxFields: 200, maxNesting: 64 };

const DEFAULT_PAGE = 50;
const DEFAULT_LIST = 20;
/** Field nesting followed by the walk; anything deeper is reported as at least this deep. */
const HARD_DEPTH = 100;
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
  /** Most fields in one selection set, fragments expanded. */
  fields: number;
  /** The cost walk stopped early because it was over the limit: `cost` is a lower bound. */
  exceeded?: 'cost';
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

class Exceeded extends Error {
  readonly value: number;
  constructor(value: number) {
    super('cost exceeded');
    this.value = value;
  }
}

/** Names of the fragments a selection set spreads, at any nesting (iterative). */
function spreadsOf(set: SelectionSetNode): Set<string> {
  const out = new Set<string>();
  const stack: SelectionSetNode[] = [set];
  while (stack.length) {
    for (const sel of stack.pop()!.selections) {
      if (sel.kind === Kind.FRAGMENT_SPREAD) out.add(sel.name.value);
      else if (sel.selectionSet) stack.push(sel.selectionSet);
    }
  }
  return out;
}

/**
 * Fragments in an order where each comes after those it spreads (Kahn's algorithm). Fragments
 * on a cycle, or spreading one, are left out: the standard NoFragmentCycles rule reports them,
 * and they count as free here.
 */
function dependencyOrder(fragments: Map<string, FragmentDefinitionNode>): string[] {
  const deps = new Map<string, Set<string>>();
  const dependents = new Map<string, string[]>();
  for (const [name, f] of fragments) {
    const d = new Set([...spreadsOf(f.selectionSet)].filter((n) => fragments.has(n)));
    deps.set(name, d);
    for (const n of d) {
      const list = dependents.get(n);
      if (list) list.push(name);
      else dependents.set(n, [name]);
    }
  }
  const pending = new Map([...deps].map(([n, d]) => [n, d.size]));
  const ready = [...pending].filter(([, c]) => c === 0).map(([n]) => n);
  const order: string[] = [];
  while (ready.length) {
    const n = ready.pop()!;
    order.push(n);
    for (const m of dependents.get(n) ?? []) {
      const left = pending.get(m)! - 1;
      pending.set(m, left);
      if (left === 0) ready.push(m);
    }
  }
  return order;
}

/**
 * Analyses every operation of the document (the one executed is among them), in two linear
 * passes: the shape (depth, aliases, width; a width is counted up to just past `maxFields`),
 * then the cost, which stops as soon as it is known to be over `maxCost` (the cost reported is
 * then a lower bound).
 */
export function analyse(
  schema: GraphQLSchema,
  doc: DocumentNode,
  variables: Record<string, unknown> = {},
  stopAt: { maxCost?: number; maxFields?: number } = {},
): Analysis {
  const maxCost = stopAt.maxCost ?? Infinity;
  const maxFields = stopAt.maxFields ?? Infinity;
  const fragments = new Map<string, FragmentDefinitionNode>();
  for (const d of doc.definitions) if (d.kind === Kind.FRAGMENT_DEFINITION) fragments.set(d.name.value, d);
  const order = dependencyOrder(fragments);
  const result: Analysis = { depth: 0, cost: 0, aliases: 0, fields: 0 };

  // One pass over the document: fragments first, in dependency order, each summarised once
  // (`[depth below, cost when resolved once, fields]`), then the operations; a spread is a lookup.
  const pass = (costing: boolean) => {
    const summary = new Map<string, [number, number, number]>();
    const over = (cost: number) => {
      if (costing && cost > maxCost) throw new Exceeded(cost);
      return cost;
    };
    // [depth below, cost, fields] of a selection set resolved once; nested sets multiply their
    // cost; fields of inline fragments and spreads count in the set they are merged into.
    const walk = (set: SelectionSetNode, parent: GraphQLCompositeType, level: number): [number, number, number] => {
      let depth = 0;
      let cost = 0;
      let fields = 0;
      // Saturates just past the limit: chains of spreads would otherwise reach 2^n.
      const wide = (n: number) => {
        fields = Math.min(fields + n, maxFields + 1);
      };
      for (const sel of set.selections) {
        if (sel.kind === Kind.FIELD) {
          wide(1);
          const name = sel.name.value;
          if (name.startsWith('__')) continue; // __typename is free; introspection is not limited here
          if (sel.alias && !costing) result.aliases++;
          if (!isObjectType(parent) && !isInterfaceType(parent)) continue;
          const def = parent.getFields()[name];
          if (!def) continue; // unknown field: the standard validation reports it
          const named = getNamedType(def.type);
          if (isLeafType(named) || !sel.selectionSet) {
            depth = Math.max(depth, 1);
            continue;
          }
          if (level >= HARD_DEPTH) {
            depth = Math.max(depth, 2); // deeper than we follow: reported as at least HARD_DEPTH + 1
            continue;
          }
          let factor = 1;
          if (costing) {
            const nullable = getNullableType(def.type);
            if (named.name.endsWith('Connection') || named.name.endsWith('List')) {
              factor = positive(argValue(sel, 'first', variables)) ?? DEFAULT_PAGE;
            } else if (isListType(nullable) && !parent.name.endsWith('Connection') && !parent.name.endsWith('List')) {
              const ids = argValue(sel, 'ids', variables);
              factor = Array.isArray(ids) ? Math.max(ids.length, 1) : DEFAULT_LIST;
            }
          }
          const [d, c] = walk(sel.selectionSet, named as GraphQLCompositeType, level + 1);
          depth = Math.max(depth, d + 1);
          cost = over(cost + 1 + (REMOTE_COST[`${parent.name}.${name}`] ?? 0) + over(factor * c));
        } else if (sel.kind === Kind.INLINE_FRAGMENT) {
          const type = sel.typeCondition ? (schema.getType(sel.typeCondition.name.value) as GraphQLCompositeType | undefined) : parent;
          if (!type) continue;
          const [d, c, f] = walk(sel.selectionSet, type, level);
          depth = Math.max(depth, d);
          cost = over(cost + c);
          wide(f);
        } else {
          const s = summary.get(sel.name.value);
          if (!s) continue; // unknown, or on a cycle: reported by the standard rules
          depth = Math.max(depth, s[0]);
          cost = over(cost + s[1]);
          wide(s[2]);
        }
      }
      if (!costing) result.fields = Math.max(result.fields, fields);
      return [depth, cost, fields];
    };
    for (const name of order) {
      const frag = fragments.get(name)!;
      const type = schema.getType(frag.typeCondition.name.value) as GraphQLCompositeType | undefined;
      if (type) summary.set(name, walk(frag.selectionSet, type, 0));
    }
    for (const d of doc.definitions) {
      if (d.kind !== Kind.OPERATION_DEFINITION) continue;
      const root = d.operation === 'query' ? schema.getQueryType() : d.operation === 'mutation' ? schema.getMutationType() : schema.getSubscriptionType();
      if (!root) continue;
      const [dd, cc] = walk(d.selectionSet, root, 0);
      if (costing) result.cost = Math.max(result.cost, cc);
      else result.depth = Math.max(result.depth, dd);
    }
  };

  for (const costing of [false, true]) {
    try {
      pass(costing);
    } catch (e) {
      if (!(e instanceof Exceeded)) throw e;
      return { ...result, cost: e.value, exceeded: 'cost' };
    }
  }
  return result;
}

export function limitErrors(a: Analysis, limits: GraphqlLimits): GraphQLError[] {
  const errors: GraphQLError[] = [];
  if (a.depth > limits.maxDepth) {
    errors.push(limitError('query_too_deep', `The query is ${a.depth} levels deep; the limit is ${limits.maxDepth}.`, { depth: a.depth, limit: limits.maxDepth }));
  }
  if (a.cost > limits.maxCost) {
    const what = a.exceeded === 'cost' ? `over ${limits.maxCost} (at least ${a.cost})` : String(a.cost);
    errors.push(
      limitError('query_too_complex', `The query's estimated cost is ${what}; the limit is ${limits.maxCost}. Ask for smaller pages (first) or fewer nested lists.`, {
        cost: a.cost,
        limit: limits.maxCost,
      }),
    );
  }
  if (a.aliases > limits.maxAliases) {
    errors.push(limitError('too_many_aliases', `The query uses ${a.aliases} aliases; the limit is ${limits.maxAliases}.`, { aliases: a.aliases, limit: limits.maxAliases }));
  }
  if (a.fields > limits.maxFields) {
    errors.push(
      limitError('too_many_fields', `A selection set holds more than ${limits.maxFields} fields once its fragments are expanded; that is the limit.`, {
        limit: limits.maxFields,
      }),
    );
  }
  return errors;
}

/**
 * Thrown out of graphql-js' validate() when a limit is exceeded, so that the standard rules stop
 * there. Shaped as mercurius' own validation error (code and `errors`), which the error
 * formatter already answers as a 400 with each error's code.
 */
export class LimitsExceeded extends Error {
  readonly code = 'MER_ERR_GQL_VALIDATION';
  readonly statusCode = 400;
  readonly errors: GraphQLError[];
  constructor(errors: GraphQLError[]) {
    super(errors.map((e) => e.message).join(' '));
    this.errors = errors;
  }
}

/**
 * A graphql-js validation rule applying the limits with the request's variables. Put it first:
 * it analyses the document on entering it and throws LimitsExceeded (aborting validation) when a
 * limit is exceeded, before the other rules walk the document.
 */
export function limitsRule(limits: GraphqlLimits, variables: Record<string, unknown> | undefined) {
  return (context: ValidationContext): ASTVisitor => ({
    Document: {
      enter(doc) {
        const errors = limitErrors(analyse(context.getSchema(), doc, variables ?? {}, limits), limits);
        if (errors.length) throw new LimitsExceeded(errors);
      },
    },
  });
}

/**
 * How deep brackets (`{`, `[`, `(`) nest in a GraphQL source, outside strings and comments,
 * stopping once past `stopAfter`. Checked before parsing: graphql-js parses nested values
 * recursively, and a few thousand `[` overflow the stack.
 */
export function bracketDepth(source: string, stopAfter = Infinity): number {
  let depth = 0;
  let max = 0;
  for (let i = 0; i < source.length; i++) {
    const c = source.charCodeAt(i);
    if (c === 0x23 /* # */) {
      while (i < source.length && source.charCodeAt(i) !== 0x0a && source.charCodeAt(i) !== 0x0d) i++;
    } else if (c === 0x22 /* " */) {
      if (source.startsWith('"""', i)) {
        const end = source.indexOf('"""', i + 3);
        // Escaped \""" inside a block string: keep looking past it.
        let e = end;
        while (e > 0 && source.charCodeAt(e - 1) === 0x5c) e = source.indexOf('"""', e + 3);
        i = e < 0 ? source.length : e + 2;
      } else {
        for (i++; i < source.length; i++) {
          const d = source.charCodeAt(i);
          if (d === 0x5c) i++;
          else if (d === 0x22 || d === 0x0a) break;
        }
      }
    } else if (c === 0x7b || c === 0x5b || c === 0x28) {
      if (++depth > max) {
        max = depth;
        if (max > stopAfter) return max;
      }
    } else if (c === 0x7d || c === 0x5d || c === 0x29) {
      depth = Math.max(0, depth - 1);
    }
  }
  return max;
}
