import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// A headless Chromium driven over the Chrome DevTools Protocol (Node's built-in WebSocket; no
// browser download, no npm dependency). The machine is made "offline" for the page: every host
// name but 127.0.0.1 resolves to nothing (--host-resolver-rules), so a page that needs a CDN
// fails here as it would on an air-gapped install.
//
// Chromium comes from the system (Debian: `apt-get install -y chromium`); CHROMIUM_PATH overrides.
// Tests skip, saying why, when it is absent.

interface Teardown {
  teardown(fn: () => unknown): void;
}

export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'].find((p) => existsSync(p));

export interface Page {
  /** Every URL the page requested (documents, scripts, styles, fetches, WebSockets). */
  requests: string[];
  /** console messages and uncaught exceptions. */
  console: string[];
  send(method: string, params?: Record<string, unknown>): Promise<any>;
  /** Evaluates an expression in the page (awaiting promises) and returns its value. */
  evaluate<T = unknown>(expression: string): Promise<T>;
  /** Polls `expression` until truthy, or throws after `timeoutMs` with `what`. */
  waitFor(expression: string, what: string, timeoutMs?: number): Promise<void>;
  navigate(url: string): Promise<void>;
}

export async function launchChromium(t: Teardown): Promise<{ newPage(): Promise<Page> }> {
  if (!CHROMIUM_PATH) throw new Error('no Chromium');
  const dataDir = mkdtempSync(join(tmpdir(), 'bh-chromium-'));
  const proc: ChildProcess = spawn(
    CHROMIUM_PATH,
    [
      '--headless=new',
      '--no-sandbox', // we run as root in CI
      '--disable-gpu',
      '--disable-dev-shm-usage',
      '--no-first-run',
      '--no-default-browser-check',
      '--disable-background-networking',
      '--disable-component-update',
      '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1',
      `--user-data-dir=${dataDir}`,
      '--remote-debugging-port=0',
      'about:blank',
    ],
    // Its own process group: Chromium forks renderers, a GPU process and crashpad, which keep
    // writing to the profile after the parent dies; the teardown kills the whole group.
    { stdio: ['ignore', 'ignore', 'pipe'], detached: true },
  );
  const exited = new Promise<void>((resolve) => {
    if (proc.exitCode !== null || proc.signalCode !== null) resolve();
    else proc.once('exit', () => resolve());
  });
  t.teardown(async () => {
    try {
      process.kill(-proc.pid!, 'SIGKILL');
    } catch {
      // the group is gone already
    }
    await exited;
    // A child reaped a moment after the parent can still be writing: retry ENOTEMPTY/EBUSY.
    await rm(dataDir, { recursive: true, force: true, maxRetries: 20, retryDelay: 100 });
  });
  const wsUrl = await new Promise<string>((resolve, reject) => {
    let err = '';
    const timer = setTimeout(() => reject(new Error(`Chromium did not start: ${err.slice(-2000)}`)), 60_000);
    proc.stderr!.on('data', (chunk) => {
      err += String(chunk);
      const m = /DevTools listening on (ws:\/\/\S+)/.exec(err);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    proc.once('exit', (code) => reject(new Error(`Chromium exited (${code}): ${err.slice(-2000)}`)));
  });

  const ws = new WebSocket(wsUrl);
  await new Promise<void>((resolve, reject) => {
    ws.addEventListener('open', () => resolve());
    ws.addEventListener('error', () => reject(new Error('cannot reach Chromium DevTools')));
  });
  t.teardown(() => ws.close());
  let nextId = 1;
  const pending = new Map<number, { resolve: (v: any) => void; reject: (e: Error) => void }>();
  const listeners: ((msg: any) => void)[] = [];
  ws.addEventListener('message', (ev) => {
    const msg = JSON.parse(String(ev.data));
    if (msg.id !== undefined) {
      const p = pending.get(msg.id);
      pending.delete(msg.id);
      if (msg.error) p?.reject(new Error(`${msg.error.message} ${msg.error.data ?? ''}`));
      else p?.resolve(msg.result);
    } else {
      for (const l of listeners) l(msg);
    }
  });
  const send = (method: string, params: Record<string, unknown> = {}, sessionId?: string): Promise<any> =>
    new Promise((resolve, reject) => {
      const id = nextId++;
      pending.set(id, { resolve, reject });
      ws.send(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }));
    });

  return {
    async newPage(): Promise<Page> {
      const { targetId } = await send('Target.createTarget', { url: 'about:blank' });
      const { sessionId } = await send('Target.attachToTarget', { targetId, flatten: true });
      const page: Page = {
        requests: [],
        console: [],
        send: (method, params) => send(method, params, sessionId),
        async evaluate<T>(expression: string): Promise<T> {
          const r = await page.send('Runtime.evaluate', { expression, awaitPromise: true, returnByValue: true });
          if (r.exceptionDetails) throw new Error(`page threw: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`);
          return r.result.value as T;
        },
        async waitFor(expression, what, timeoutMs = 60_000) {
          const deadline = Date.now() + timeoutMs;
          while (!(await page.evaluate<boolean>(`Boolean(${expression})`).catch(() => false))) {
            if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; console: ${page.console.join(' | ').slice(0, 3000)}`);
            await new Promise((r) => setTimeout(r, 100));
          }
        },
        async navigate(url) {
          const loaded = new Promise<void>((resolve) => {
            const l = (msg: any) => {
              if (msg.sessionId === sessionId && msg.method === 'Page.loadEventFired') {
                listeners.splice(listeners.indexOf(l), 1);
                resolve();
              }
            };
            listeners.push(l);
          });
          const r = await page.send('Page.navigate', { url });
          if (r.errorText) throw new Error(`navigation to ${url} failed: ${r.errorText}`);
          await loaded;
        },
      };
      listeners.push((msg) => {
        if (msg.sessionId !== sessionId) return;
        if (msg.method === 'Network.requestWillBeSent') page.requests.push(msg.params.request.url);
        else if (msg.method === 'Network.webSocketCreated') page.requests.push(msg.params.url);
        else if (msg.method === 'Runtime.consoleAPICalled') page.console.push(`${msg.params.type}: ${msg.params.args.map((a: any) => a.value ?? a.description).join(' ')}`);
        else if (msg.method === 'Runtime.exceptionThrown') page.console.push(`exception: ${msg.params.exceptionDetails.exception?.description ?? msg.params.exceptionDetails.text}`);
      });
      await page.send('Page.enable');
      await page.send('Network.enable');
      await page.send('Runtime.enable');
      return page;
    },
  };
}
