import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { parse, stringify, YAMLParseError } from 'yaml';
import { apiCall, ApiUnreachable, problemLine } from './cli-api.ts';

// `backhaul export | plan | apply`: API clients of GET /v1/export, POST /v1/plan and POST
// /v1/apply (src/domain/declarative). Bundles are YAML here (the `yaml` package, YAML 1.2, which
// also reads JSON), JSON on the wire. Loaded only for these commands.

/** A refusal or a usage error: one line (plus the server's field errors) on stderr, and its exit code. */
class DeclarativeCliError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode: number) {
    super(message);
    this.name = 'DeclarativeCliError';
    this.exitCode = exitCode;
  }
}

interface FieldChange {
  field: string;
  before?: unknown;
  after?: unknown;
  secret?: boolean;
}
interface Change {
  action: 'create' | 'update' | 'delete';
  kind: string;
  slug: string;
  expectedVersion: number | null;
  fields: FieldChange[];
  version?: number | null;
}
interface Plan {
  planHash: string;
  changes: Change[];
  summary: { create: number; update: number; delete: number; unchanged: number };
}

const USAGE = {
  export: 'usage: backhaul export [-o <file>] [--json]',
  plan: 'usage: backhaul plan -f <file|-> [--json] [--detailed-exitcode]',
  apply: 'usage: backhaul apply -f <file|-> [--json]',
};

/** One API call; a problem answer is a DeclarativeCliError carrying the problem's detail, code and paths. */
async function call(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<any> {
  const key = process.env.BACKHAUL_API_KEY;
  if (!key) throw new DeclarativeCliError('BACKHAUL_API_KEY is not set: export and plan need an API key with the read scope, apply one with write.', 2);
  const a = await apiCall(method, path, { key, body, headers, timeoutMs: 300_000 }).catch((e: unknown) => {
    throw e instanceof ApiUnreachable ? new DeclarativeCliError(e.message, 1) : e;
  });
  if (!a.ok) {
    const lines = [problemLine(method, path, a)];
    for (const e of (a.json?.errors ?? []) as { path: string; message: string }[]) lines.push(`  at ${e.path || '/'}: ${e.message}`);
    if (a.json?.hint) lines.push(`  hint: ${a.json.hint}`);
    throw new DeclarativeCliError(lines.join('\n'), 1);
  }
  return a.json;
}

/** The bundle in `file` (YAML or JSON; `-`: stdin). */
function readBundle(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file === '-' ? 0 : file, 'utf8');
  } catch (e) {
    throw new DeclarativeCliError(`cannot read ${file}: ${(e as Error).message}`, 1);
  }
  try {
    return parse(text, { prettyErrors: true }) ?? {};
  } catch (e) {
    if (e instanceof YAMLParseError) throw new DeclarativeCliError(`${file} is not valid YAML: ${e.message}`, 1);
    throw e;
  }
}

const show = (v: unknown) => (v === undefined ? '(unset)' : JSON.stringify(v));
const SIGN = { create: '+', update: '~', delete: '-' } as const;

/** The plan as people read it: one line per resource, one per changed field. */
export function renderPlan(plan: Plan, applied = false): string {
  const out: string[] = [];
  if (!plan.changes.length) return `No changes: the workspace matches the bundle (${plan.summary.unchanged} resources).\n`;
  for (const c of plan.changes) {
    const version = applied ? (c.version == null ? '' : ` (now version ${c.version})`) : c.expectedVersion === null ? '' : ` (version ${c.expectedVersion})`;
    out.push(`  ${SIGN[c.action]} ${c.kind} ${c.slug}${version}`);
    if (c.action === 'delete') continue;
    for (const f of c.fields) {
      if (f.secret) out.push(`      ${f.field}: ${c.action === 'create' ? 'set' : 'differs (changed outside the bundle, or in it)'}; value not shown`);
      else if (c.action === 'create') out.push(`      ${f.field}: ${show(f.after)}`);
      else out.push(`      ${f.field}: ${show(f.before)} → ${show(f.after)}`);
    }
  }
  const s = plan.summary;
  out.push(`${applied ? 'Applied' : 'Plan'}: ${s.create} to create, ${s.update} to update, ${s.delete} to delete, ${s.unchanged} unchanged.`);
  return `${out.join('\n')}\n`;
}

export async function declarativeCommand(command: 'export' | 'plan' | 'apply', rest: string[]): Promise<void> {
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({
      args: rest,
      options: { file: { type: 'string', short: 'f' }, output: { type: 'string', short: 'o' }, json: { type: 'boolean', default: false }, 'detailed-exitcode': { type: 'boolean', default: false } },
    }).values;
  } catch (e) {
    throw new DeclarativeCliError(`${(e as Error).message}\n${USAGE[command]}`, 2);
  }
  if (command === 'export') {
    const bundle = await call('GET', '/v1/export');
    const text = values.json
      ? `${JSON.stringify(bundle, null, 2)}\n`
      : `# Backhaul bundle: \`backhaul plan -f FILE\` shows what applying it changes, \`backhaul apply -f FILE\` applies it.\n# Secrets are {env: NAME} references (resolved in the server's environment) or omitted (kept as they are).\n# Set prune: true to delete what the bundle does not list.\n${stringify(bundle, { lineWidth: 0 })}`;
    if (typeof values.output === 'string') writeFileSync(values.output, text);
    else process.stdout.write(text);
    return;
  }
  if (typeof values.file !== 'string') throw new DeclarativeCliError(`-f <file> is required\n${USAGE[command]}`, 2);
  const bundle = readBundle(values.file);
  const plan: Plan = await call('POST', '/v1/plan', bundle);
  if (command === 'plan') {
    process.stdout.write(values.json ? `${JSON.stringify(plan, null, 2)}\n` : renderPlan(plan));
    if (values['detailed-exitcode'] && plan.changes.length) process.exitCode = 2;
    return;
  }
  if (!plan.changes.length) {
    process.stdout.write(values.json ? `${JSON.stringify({ planHash: plan.planHash, applied: [], summary: plan.summary }, null, 2)}\n` : renderPlan(plan));
    return;
  }
  // Exactly the plan just computed: if the workspace moved in between, 412 plan_changed and nothing is applied.
  const result = await call('POST', '/v1/apply', bundle, { 'if-match': `"${plan.planHash}"` });
  process.stdout.write(values.json ? `${JSON.stringify(result, null, 2)}\n` : renderPlan({ ...plan, changes: result.applied, summary: result.summary }, true));
}
