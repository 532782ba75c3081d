// A local GraphQL API (contacts), served by the reference implementation (graphql-js) over HTTP
// the way the GraphQL-over-HTTP specification describes: POST application/json
// { query, variables, operationName }; with `Accept: application/graphql-response+json` the
// answer has that media type and request errors (parse, validation, variable coercion: no `data`)
// get status 400, otherwise application/json and 200. Field errors carry `path` and
// `extensions.code`; mutation root fields run serially. On top:
//   - bearer auth (401, or 200 with an UNAUTHENTICATED error when `authStyle` is 'graphql'),
//   - an OAuth2 client-credentials token endpoint at /oauth/token,
//   - a limit on root fields per document (a request error past it, like public APIs' complexity limits),
//   - canned responses (429 with Retry-After, 503, non-GraphQL bodies).
import { createServer, type Server } from 'node:http';
import { randomBytes } from 'node:crypto';
import { GraphQLError, buildSchema, execute, parse, validate, Kind, type DocumentNode, type OperationDefinitionNode } from 'graphql';

const SDL = /* GraphQL */ `
  type Contact { id: ID!, email: String!, firstName: String, age: Int }
  input ContactInput { email: String!, firstName: String, age: Int }
  type UserError { field: [String!], message: String!, code: String }
  type UpsertContactPayload { contact: Contact, userErrors: [UserError!]! }
  type Query { contact(email: String!): Contact, contactCount: Int! }
  type Mutation {
    createContact(input: ContactInput!): Contact
    createContactStrict(input: ContactInput!): Contact!
    updateContact(id: ID!, input: ContactInput!): Contact
    upsertContact(input: ContactInput!): UpsertContactPayload!
    deleteContact(id: ID!): Boolean
  }
`;

export interface Canned {
  status: number;
  headers?: Record<string, string>;
  body?: unknown;
  raw?: string;
  /** Let this many requests through first. */
  skip?: number;
}

export interface FakeGraphqlApi {
  url: string;
  token: string;
  /** 'http': 401 for a bad token; 'graphql': 200 with an UNAUTHENTICATED error (Apollo style). */
  authStyle: 'http' | 'graphql';
  contacts: Map<string, { id: string; email: string; firstName?: string | null; age?: number | null }>;
  /** Root fields allowed in one document. */
  maxRootFields: number;
  canned: Canned[];
  /** Every request: its root field count and the HTTP status answered. */
  requests: { rootFields: number; status: number; operationName?: string; variables?: Record<string, unknown> }[];
  /** Times each email was written. */
  writes: Map<string, number>;
  clientId: string;
  clientSecret: string;
  tokensIssued: number;
  close(): Promise<void>;
}

export async function startFakeGraphqlApi(): Promise<FakeGraphqlApi> {
  const schema = buildSchema(SDL);
  let seq = 0;
  const oauthTokens = new Set<string>();
  const api: FakeGraphqlApi = {
    url: '',
    token: `gql-${randomBytes(12).toString('hex')}`,
    authStyle: 'http',
    contacts: new Map(),
    maxRootFields: 100,
    canned: [],
    requests: [],
    writes: new Map(),
    clientId: 'gql-client',
    clientSecret: 'gql-client-secret',
    tokensIssued: 0,
    close: async () => {},
  };
  const byEmail = (email: string) => [...api.contacts.values()].find((c) => c.email.toLowerCase() === email.toLowerCase());
  const bad = (message: string, code: string) => new GraphQLError(message, { extensions: { code } });
  const check = (input: { email: string }) => {
    if (!input.email.includes('@')) throw bad(`email "${input.email}" is invalid`, 'BAD_USER_INPUT');
    if (input.email.startsWith('throttle')) throw bad('Too many writes to this record, slow down', 'THROTTLED');
  };
  const wrote = (email: string) => api.writes.set(email, (api.writes.get(email) ?? 0) + 1);
  const create = (input: { email: string; firstName?: string; age?: number }) => {
    check(input);
    if (byEmail(input.email)) throw bad(`a contact with email ${input.email} already exists`, 'CONFLICT');
    const c = { id: `c${++seq}`, ...input };
    api.contacts.set(c.id, c);
    wrote(input.email);
    return c;
  };
  const rootValue = {
    contact: ({ email }: { email: string }) => byEmail(email) ?? null,
    contactCount: () => api.contacts.size,
    createContact: ({ input }: { input: { email: string } }) => create(input),
    createContactStrict: ({ input }: { input: { email: string } }) => create(input),
    updateContact: ({ id, input }: { id: string; input: { email: string } }) => {
      check(input);
      const c = api.contacts.get(id);
      if (!c) throw bad(`no contact ${id}`, 'NOT_FOUND');
      Object.assign(c, input);
      wrote(input.email);
      return c;
    },
    upsertContact: ({ input }: { input: { email: string } }) => {
      if (!input.email.includes('@')) return { contact: null, userErrors: [{ field: ['input', 'email'], message: 'Email is invalid', code: 'INVALID' }] };
      const cur = byEmail(input.email);
      if (cur) Object.assign(cur, input);
      const c = cur ?? { id: `c${++seq}`, ...input };
      api.contacts.set(c.id, c);
      wrote(input.email);
      return { contact: c, userErrors: [] };
    },
    deleteContact: ({ id }: { id: string }) => {
      if (!api.contacts.has(id)) throw bad(`no contact ${id}`, 'NOT_FOUND');
      api.contacts.delete(id);
      return true;
    },
  };

  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      const text = Buffer.concat(chunks).toString('utf8');
      const url = new URL(req.url ?? '/', 'http://x');
      const send = (status: number, body: unknown, type = 'application/json', headers: Record<string, string> = {}) => {
        res.writeHead(status, { 'content-type': type, ...headers });
        res.end(typeof body === 'string' ? body : JSON.stringify(body));
      };
      if (url.pathname === '/oauth/token' && req.method === 'POST') {
        const form = new URLSearchParams(text);
        const basic = Buffer.from((req.headers.authorization ?? '').replace(/^Basic /, ''), 'base64').toString('utf8');
        if (form.get('grant_type') !== 'client_credentials' || basic !== `${api.clientId}:${api.clientSecret}`) return send(401, { error: 'invalid_client' });
        const t = `oauth-${randomBytes(12).toString('hex')}`;
        oauthTokens.add(t);
        api.tokensIssued++;
        return send(200, { access_token: t, token_type: 'Bearer', expires_in: 3600 });
      }
      if (url.pathname !== '/graphql' || req.method !== 'POST') return send(404, { message: 'not found' });
      const rec = { rootFields: 0, status: 0, operationName: undefined as string | undefined, variables: undefined as Record<string, unknown> | undefined };
      api.requests.push(rec);
      let canned: Canned | undefined = api.canned[0];
      if (canned?.skip) {
        canned.skip--;
        canned = undefined;
      } else if (canned) api.canned.shift();
      if (canned) {
        rec.status = canned.status;
        return send(canned.status, canned.raw ?? canned.body ?? '', canned.raw ? 'text/html' : 'application/json', canned.headers);
      }
      const gqlResponse = /application\/graphql-response\+json/.test(req.headers.accept ?? '');
      const type = gqlResponse ? 'application/graphql-response+json; charset=utf-8' : 'application/json; charset=utf-8';
      const reply = (status: number, body: unknown) => {
        rec.status = status;
        send(status, body, type);
      };
      const requestError = (errors: readonly { message: string }[]) => reply(gqlResponse ? 400 : 200, { errors });
      const auth = (req.headers.authorization ?? '').replace(/^Bearer /, '');
      if (auth !== api.token && !oauthTokens.has(auth)) {
        if (api.authStyle === 'http') return reply(401, { errors: [{ message: 'Unauthorized: missing or invalid bearer token' }] });
        return reply(200, { errors: [{ message: 'You must be logged in', extensions: { code: 'UNAUTHENTICATED' } }], data: null });
      }
      let body: { query?: string; variables?: Record<string, unknown>; operationName?: string };
      try {
        body = JSON.parse(text);
      } catch {
        return requestError([{ message: 'Body is not JSON' }]);
      }
      rec.operationName = body.operationName;
      rec.variables = body.variables;
      let doc: DocumentNode;
      try {
        doc = parse(body.query ?? '');
      } catch (e) {
        return requestError([{ message: (e as Error).message }]);
      }
      const op = doc.definitions.find((d): d is OperationDefinitionNode => d.kind === Kind.OPERATION_DEFINITION && (!body.operationName || d.name?.value === body.operationName));
      rec.rootFields = op?.selectionSet.selections.length ?? 0;
      if (rec.rootFields > api.maxRootFields) return requestError([{ message: `Query has ${rec.rootFields} root fields, more than the ${api.maxRootFields} allowed` }]);
      const errors = validate(schema, doc);
      if (errors.length) return requestError(errors.map((e) => e.toJSON()));
      const result = await execute({ schema, document: doc, rootValue, variableValues: body.variables, operationName: body.operationName });
      if (!('data' in result) || result.data === undefined) return requestError((result.errors ?? []).map((e) => e.toJSON()));
      return reply(200, { ...(result.errors ? { errors: result.errors.map((e) => e.toJSON()) } : {}), data: result.data });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  api.url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  api.close = () => new Promise<void>((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  });
  return api;
}
