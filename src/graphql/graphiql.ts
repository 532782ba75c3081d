import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { AppError } from '../errors.ts';

// GraphiQL at GET /graphiql, served entirely from installed npm packages (React 18's and
// GraphiQL 4's UMD builds, GraphiQL's stylesheet, whose fonts and icons are inlined data: URLs):
// it works on an air-gapped install, with no CDN and no service worker. The page asks for the
// API key in GraphiQL's Headers tab ({"Authorization": "Bearer bh_…"}, prefilled with a
// placeholder to replace); the same headers go in
// the WebSocket's connection_init payload, so subscriptions work too. Assets are immutable per
// package version and cached by browsers for a day.

export const GRAPHIQL_PATH = '/graphiql';
const ASSETS = `${GRAPHIQL_PATH}/assets`;

const require = createRequire(import.meta.url);
const packageDir = (name: string) => dirname(require.resolve(`${name}/package.json`));

interface Asset {
  type: string;
  file?: string;
  text?: string;
}

/** The page's own script: renders GraphiQL against this server's /graphql (HTTP and WebSocket). */
function appScript(graphqlPath: string): string {
  // ASCII only: browsers refuse a header value outside ISO-8859-1.
  const headers = JSON.stringify({ Authorization: 'Bearer bh_YOUR_API_KEY' }, null, 2);
  const query = [
    '# Welcome to Backhaul\'s GraphQL API.',
    '#',
    '# Every request needs an API key: open the "Headers" tab below and replace',
    '# bh_YOUR_API_KEY with yours: { "Authorization": "Bearer bh_…" }',
    '# (GraphiQL keeps the headers in this browser\'s local storage; subscriptions send them',
    '# in the WebSocket\'s connection_init).',
    '',
    '{',
    '  viewer {',
    '    workspace { slug name }',
    '    scopes',
    '  }',
    '}',
    '',
  ].join('\n');
  return `'use strict';
(function () {
  var url = new URL(${JSON.stringify(graphqlPath)}, window.location.href);
  var wsUrl = new URL(url.href);
  wsUrl.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  var fetcher = GraphiQL.createFetcher({ url: url.href, subscriptionUrl: wsUrl.href });
  var root = ReactDOM.createRoot(document.getElementById('graphiql'));
  root.render(React.createElement(GraphiQL, {
    fetcher: fetcher,
    defaultHeaders: ${JSON.stringify(headers)},
    defaultQuery: ${JSON.stringify(query)},
    shouldPersistHeaders: true,
    isHeadersEditorEnabled: true,
    defaultEditorToolsVisibility: 'headers'
  }));
})();
`;
}

function page(): string {
  return `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <meta name="robots" content="noindex">
  <title>Backhaul GraphiQL</title>
  <link rel="stylesheet" href="${ASSETS}/graphiql.min.css">
  <style>body { margin: 0; } #graphiql { height: 100vh; }</style>
</head>
<body>
  <div id="graphiql">Loading GraphiQL…</div>
  <script src="${ASSETS}/react.production.min.js"></script>
  <script src="${ASSETS}/react-dom.production.min.js"></script>
  <script src="${ASSETS}/graphiql.min.js"></script>
  <script src="${ASSETS}/app.js"></script>
</body>
</html>
`;
}

/**
 * Registers GET /graphiql and its assets on `app` (public routes: the page holds no data; every
 * query it sends needs a key). Throws at start-up if a package is missing, not at first use.
 */
export function registerGraphiql(app: FastifyInstance, graphqlPath: string): void {
  const react = packageDir('react');
  const reactDom = packageDir('react-dom');
  const graphiql = packageDir('graphiql');
  const assets: Record<string, Asset> = {
    'react.production.min.js': { type: 'text/javascript; charset=utf-8', file: join(react, 'umd/react.production.min.js') },
    'react-dom.production.min.js': { type: 'text/javascript; charset=utf-8', file: join(reactDom, 'umd/react-dom.production.min.js') },
    'graphiql.min.js': { type: 'text/javascript; charset=utf-8', file: join(graphiql, 'graphiql.min.js') },
    'graphiql.min.css': { type: 'text/css; charset=utf-8', file: join(graphiql, 'graphiql.min.css') },
    'app.js': { type: 'text/javascript; charset=utf-8', text: appScript(graphqlPath) },
  };
  // Read once: a few MB held for the life of the process, and a missing file fails start-up.
  const bodies = new Map(Object.entries(assets).map(([name, a]) => [name, a.text ?? readFileSync(a.file!)]));
  const html = page();

  const config = { public: true };
  const schema = { hide: true };
  app.get(GRAPHIQL_PATH, { config, schema }, async (_req, reply) => reply.type('text/html; charset=utf-8').header('cache-control', 'no-cache').send(html));
  app.get(`${ASSETS}/:name`, { config, schema }, async (req, reply) => {
    const name = (req.params as { name: string }).name;
    const body = bodies.get(name);
    if (body === undefined) throw new AppError(404, 'route_not_found', 'Not found', { detail: `No GraphiQL asset "${name}".` });
    return reply.type(assets[name].type).header('cache-control', 'public, max-age=86400').send(body);
  });
}
