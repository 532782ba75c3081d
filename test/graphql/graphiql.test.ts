import t from 'tap';
import { CHROMIUM_PATH, launchChromium } from '../helpers/chromium.ts';
import { startGraphql } from '../helpers/graphql.ts';

// GraphiQL works without internet (issue 16 #2): the page and every asset it references come
// from this server (npm packages, no CDN), and in a headless Chromium whose every host name but
// 127.0.0.1 resolves to nothing, it renders, takes an API key in its Headers tab and runs a query.

const ASSET_TYPES: Record<string, RegExp> = { '.js': /^text\/javascript/, '.css': /^text\/css/ };

t.test('the GraphiQL page references only local assets, each served here', async (t) => {
  const g = await startGraphql(t);
  const page = await fetch(`${g.url}/graphiql`);
  t.equal(page.status, 200, 'public: no key needed for the page');
  t.match(page.headers.get('content-type'), /^text\/html/);
  const html = await page.text();
  const refs = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]);
  t.ok(refs.length >= 5, `the page references its assets: ${refs.join(', ')}`);
  t.notMatch(html, /https?:\/\/|\/\/[a-z]/i, 'no absolute URL in the page');
  for (const ref of refs) {
    t.match(ref, /^\/graphiql\/assets\/[\w.-]+$/, `${ref} is a local path`);
    const r = await fetch(g.url + ref);
    t.equal(r.status, 200, `${ref} answers 200`);
    const ext = ref.slice(ref.lastIndexOf('.'));
    t.match(r.headers.get('content-type'), ASSET_TYPES[ext], `${ref}: content type`);
    const body = await r.text();
    t.ok(body.length > 100, `${ref}: has content`);
    if (ext === '.css') t.notMatch(body, /url\((?!["']?data:)/, `${ref}: fonts and images are inlined`);
  }
  const app = await (await fetch(`${g.url}/graphiql/assets/app.js`)).text();
  t.notMatch(app, /unpkg|jsdelivr|cdn|https?:\/\//i, 'our script loads nothing from elsewhere');
  t.match(app, /Authorization/, 'the page shows where the bearer header goes');
  t.equal((await fetch(`${g.url}/graphiql/assets/nope.js`)).status, 404);
});

t.test('GraphiQL is off in production', async (t) => {
  const g = await startGraphql(t, { production: true });
  t.equal((await fetch(`${g.url}/graphiql`)).status, 404);
  t.equal((await fetch(`${g.url}/graphiql/assets/graphiql.min.js`)).status, 404);
});

t.test(
  'GraphiQL renders and runs a query in headless Chromium, offline',
  { skip: CHROMIUM_PATH ? false : 'Chromium not found (/usr/bin/chromium; set CHROMIUM_PATH, or `apt-get install -y chromium`)', timeout: 240_000 },
  async (t) => {
    const g = await startGraphql(t);
    const browser = await launchChromium(t);
    const page = await browser.newPage();
    await page.navigate(`${g.url}/graphiql`);
    await page.waitFor(`document.querySelector('.graphiql-container')`, 'GraphiQL to render');
    await page.waitFor(`document.querySelector('.graphiql-execute-button')`, 'the run button');

    // Set the key where a person would: the Headers tab, prefilled with a placeholder.
    // (The headers editor holds a JSON object; the query editor starts with comments.)
    const headersEditor = `[...document.querySelectorAll('.CodeMirror')].map((e) => e.CodeMirror).find((cm) => /^\\s*\\{[^]*"Bearer bh_YOUR_API_KEY"/.test(cm.getValue()))`;
    await page.waitFor(headersEditor, 'the headers editor with its placeholder');
    await page.evaluate(`(() => {
      const editor = ${headersEditor};
      editor.setValue(JSON.stringify({ Authorization: 'Bearer ${g.h.token}' }, null, 2));
    })()`);
    await page.evaluate(`document.querySelector('.graphiql-execute-button').click()`);
    await page.waitFor(`document.querySelector('.graphiql-response')?.innerText.includes('"slug": "default"')`, 'the query result');
    const result = await page.evaluate<string>(`document.querySelector('.graphiql-response').innerText`);
    t.match(result, /"scopes"/, 'the default query ran with the key from the Headers tab');

    const origin = new URL(g.url).origin;
    const foreign = page.requests.filter((u) => !u.startsWith(origin) && !u.startsWith(origin.replace(/^http/, 'ws')) && !u.startsWith('data:') && !u.startsWith('about:'));
    t.same(foreign, [], 'every request went to this server');
    t.ok(page.requests.some((u) => u.endsWith('/graphiql/assets/graphiql.min.js')), 'the assets were loaded from here');
  },
);
