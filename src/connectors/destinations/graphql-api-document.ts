import { Kind, parse, print, visit, type DocumentNode, type FieldNode, type FragmentDefinitionNode, type OperationDefinitionNode, type VariableDefinitionNode } from 'graphql';
import { ConnectorError } from '../../errors.ts';
import { compileTemplate, type CompiledTemplate } from '../template.ts';

// The GraphQL destination's documents: one mutation per operation, checked once, and combined
// into a batch document where row i's mutation field is aliased `r{i}` and its variables renamed
// `$r{i}_{name}`, so that errors (`path[0]`) and variable-coercion messages name their row.

export interface CompiledMutation {
  /** The document as configured (row mode). */
  source: string;
  operationName?: string;
  /** The variable names the operation declares. */
  variables: string[];
  /** Batch mode: the single root field, and the operation's parts to repeat per row. */
  rootField?: FieldNode;
  varDefs: readonly VariableDefinitionNode[];
  fragments: FragmentDefinitionNode[];
}

function invalid(what: string, msg: string): ConnectorError {
  return new ConnectorError('invalid_config', `${what}: ${msg}`, {
    classification: 'fatal',
    status: 400,
    hint: 'Each operation needs a GraphQL document with exactly one mutation, e.g. "mutation($input: ContactInput!) { upsertContact(input: $input) { id } }".',
  });
}

/** Parses and checks a configured mutation; batch mode also needs exactly one root field. */
export function compileMutation(source: string, what: string, batch: boolean): CompiledMutation {
  let doc: DocumentNode;
  try {
    doc = parse(source, { maxTokens: 10_000 });
  } catch (e) {
    throw invalid(what, `the document does not parse: ${(e as Error).message}`);
  }
  const ops = doc.definitions.filter((d): d is OperationDefinitionNode => d.kind === Kind.OPERATION_DEFINITION);
  if (ops.length !== 1 || ops[0].operation !== 'mutation') throw invalid(what, 'the document must hold exactly one operation, a mutation');
  const op = ops[0];
  const fragments = doc.definitions.filter((d): d is FragmentDefinitionNode => d.kind === Kind.FRAGMENT_DEFINITION);
  const fields = op.selectionSet.selections.filter((s): s is FieldNode => s.kind === Kind.FIELD);
  if (batch && (fields.length !== 1 || op.selectionSet.selections.length !== 1)) {
    throw invalid(what, 'batch mode needs exactly one mutation field at the top of the operation (each row becomes one aliased copy of it)');
  }
  return {
    source,
    operationName: op.name?.value,
    variables: (op.variableDefinitions ?? []).map((v) => v.variable.name.value),
    rootField: batch ? fields[0] : undefined,
    varDefs: op.variableDefinitions ?? [],
    fragments,
  };
}

/** The field name (or alias) under which a row-mode result arrives in `data`. */
export function rootResponseKey(m: CompiledMutation): string | undefined {
  const doc = parse(m.source);
  const op = doc.definitions.find((d): d is OperationDefinitionNode => d.kind === Kind.OPERATION_DEFINITION)!;
  const f = op.selectionSet.selections.find((s): s is FieldNode => s.kind === Kind.FIELD);
  return f ? (f.alias ?? f.name).value : undefined;
}

export const batchAlias = (i: number) => `r${i}`;
export const batchVar = (i: number, name: string) => `r${i}_${name}`;

/**
 * One document carrying `count` copies of the mutation's root field, aliased r0…r{count-1}, with
 * variables renamed per copy. Mutation root fields run one after another (GraphQL spec,
 * "Normal and Serial Execution").
 */
export function batchDocument(m: CompiledMutation, count: number): string {
  const rename = (i: number) => ({
    Variable: (node: { kind: Kind.VARIABLE; name: { kind: Kind.NAME; value: string } }) => ({ ...node, name: { ...node.name, value: batchVar(i, node.name.value) } }),
  });
  const varDefs: VariableDefinitionNode[] = [];
  const selections: FieldNode[] = [];
  for (let i = 0; i < count; i++) {
    for (const d of m.varDefs) varDefs.push(visit(d, rename(i) as never) as VariableDefinitionNode);
    const f = visit(m.rootField!, rename(i) as never) as FieldNode;
    selections.push({ ...f, alias: { kind: Kind.NAME, value: batchAlias(i) } });
  }
  const op: OperationDefinitionNode = {
    kind: Kind.OPERATION_DEFINITION,
    operation: 'mutation' as OperationDefinitionNode['operation'],
    name: { kind: Kind.NAME, value: 'BackhaulBatch' },
    variableDefinitions: varDefs,
    directives: [],
    selectionSet: { kind: Kind.SELECTION_SET, selections },
  };
  return print({ kind: Kind.DOCUMENT, definitions: [op, ...m.fragments] });
}

// ---- variables -----------------------------------------------------------------------------

export type VariablesBuilder = (payload: Record<string, unknown>, recordId: string | undefined) => Record<string, unknown>;

/**
 * Compiles the configured variables: a JSON value in which the string `"$payload"` stands for the
 * whole mapped payload, `"$payload.<field>"` for one field's value (its type kept), `"$recordId"`
 * for the destination id the snapshot holds (or null), and strings with `{{…}}` are templates
 * rendered to strings. Anything else is sent as written.
 */
export function compileVariables(spec: Record<string, unknown>, what: string): VariablesBuilder {
  const templates = new Map<string, CompiledTemplate>();
  const check = (v: unknown): void => {
    if (typeof v === 'string' && !/^\$(payload(\.[^.]+)?|recordId)$/.test(v) && v.includes('{{')) {
      try {
        templates.set(v, compileTemplate(v));
      } catch (e) {
        throw invalid(what, (e as Error).message);
      }
    } else if (typeof v === 'string' && v.startsWith('$') && !/^\$(payload(\.[^.]+)?|recordId)$/.test(v) && !v.startsWith('$$')) {
      throw invalid(what, `unknown reference "${v}" in variables (use "$payload", "$payload.<field>" or "$recordId"; write "$$" for a literal "$")`);
    } else if (Array.isArray(v)) v.forEach(check);
    else if (v && typeof v === 'object') Object.values(v).forEach(check);
  };
  check(spec);
  const build = (v: unknown, payload: Record<string, unknown>, recordId: string | undefined): unknown => {
    if (typeof v === 'string') {
      if (v === '$payload') return payload;
      if (v === '$recordId') return recordId ?? null;
      if (v.startsWith('$payload.')) return payload[v.slice(9)] ?? null;
      if (v.startsWith('$$')) return v.slice(1);
      const t = templates.get(v);
      return t ? t.render(payload) : v;
    }
    if (Array.isArray(v)) return v.map((x) => build(x, payload, recordId));
    if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, build(x, payload, recordId)]));
    return v;
  };
  return (payload, recordId) => build(spec, payload, recordId) as Record<string, unknown>;
}
