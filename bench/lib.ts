import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';

// Small helpers of the benchmark: child processes, their memory, a REST client.

export interface Proc {
  child: ChildProcess;
  /** Resolves with the first stdout line that parses as JSON (processes announce readiness so). */
  firstJson: Promise<any>;
  /** Resolves with the last JSON line once the process exits with 0; rejects otherwise. */
  done: Promise<any>;
  stderr: string[];
}

export function spawnNode(args: string[], env: Record<string, string | undefined> = {}): Proc {
  const child = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const stderr: string[] = [];
  child.stderr!.on('data', (c: Buffer) => {
    stderr.push(String(c));
    if (stderr.length > 200) stderr.shift();
  });
  let last: any;
  let resolveFirst!: (v: any) => void;
  let rejectFirst!: (e: Error) => void;
  const firstJson = new Promise<any>((res, rej) => {
    resolveFirst = res;
    rejectFirst = rej;
  });
  firstJson.catch(() => {});
  createInterface({ input: child.stdout! }).on('line', (line) => {
    try {
      last = JSON.parse(line);
      resolveFirst(last);
    } catch {
      // not ours (e.g. a log line)
    }
  });
  const done = new Promise<any>((res, rej) => {
    child.on('exit', (code, signal) => {
      const err = new Error(`${args.join(' ')} exited with ${code ?? signal}: ${stderr.join('').slice(-2000)}`);
      rejectFirst(err);
      if (code === 0) res(last);
      else rej(err);
    });
  });
  done.catch(() => {});
  return { child, firstJson, done, stderr };
}

export async function stop(p: Proc | undefined, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (!p || p.child.exitCode !== null || p.child.signalCode !== null) return;
  const exited = new Promise((r) => p.child.once('exit', r));
  p.child.kill(signal);
  const t = setTimeout(() => p.child.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(t);
}

/** Peak and current resident set size of a process, in MB (from /proc/<pid>/status). */
export function memoryOf(pid: number): { hwmMb: number; rssMb: number } | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? 0);
    return { hwmMb: kb('VmHWM') / 1024, rssMb: kb('VmRSS') / 1024 };
  } catch {
    return undefined;
  }
}

/** Samples a process's RSS every `everyMs` until stopped; returns the highest seen and VmHWM. */
export function sampleRss(pid: number, everyMs = 100) {
  let maxRss = 0;
  const t0 = Date.now();
  /** [seconds since start, RSS MB], about every second: where in the run memory grows. */
  const timeline: [number, number][] = [];
  const t = setInterval(() => {
    const m = memoryOf(pid);
    if (!m) return;
    maxRss = Math.max(maxRss, m.rssMb);
    const s = Math.floor((Date.now() - t0) / 1000);
    if (!timeline.length || timeline[timeline.length - 1][0] < s) timeline.push([s, Math.round(m.rssMb)]);
  }, everyMs);
  return {
    stop() {
      clearInterval(t);
      const m = memoryOf(pid);
      return { peakMb: Math.max(maxRss, m?.hwmMb ?? 0, m?.rssMb ?? 0), sampledMaxRssMb: maxRss, vmHwmMb: m?.hwmMb ?? 0, timeline };
    },
  };
}

export interface Api {
  url: string;
  token: string;
  req(method: string, path: string, body?: unknown): Promise<{ status: number; body: any }>;
  ok(method: string, path: string, body?: unknown): Promise<any>;
}

export function apiClient(url: string, token: string): Api {
  const api: Api = {
    url,
    token,
    async req(method, path, body) {
      const res = await fetch(url + path, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await res.text();
      return { status: res.status, body: text ? JSON.parse(text) : null };
    },
    async ok(method, path, body) {
      const r = await api.req(method, path, body);
      if (r.status >= 300) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`);
      return r.body;
    },
  };
  return api;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs: number, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(everyMs);
  }
}

export const TERMINAL = ['succeeded', 'partially_succeeded', 'failed', 'cancelled'];

export function percentile(sorted: number[], p: number): number {
  if (!sorted.length) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

export const round = (n: number, d = 2) => Math.round(n * 10 ** d) / 10 ** d;
