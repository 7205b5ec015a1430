/**
 * Helpers for the hostile-input and fault tests: raw sockets that send bytes
 * exactly as written, HTTP calls bound to a chosen loopback source address,
 * and a process's open file descriptors and resident memory read from /proc.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import type { TestContext } from 'node:test';
import { BIN, REPO } from './cli.ts';
import { freePort } from './serve.ts';

export interface RawAnswer {
  /** Every byte received until the peer closed (or the time ran out). */
  text: string;
  /** Status codes of every response head found in `text`, in order. */
  statuses: number[];
  /** true when the peer closed the connection; false when the time ran out first. */
  closed: boolean;
  /** The socket error, when the connection ended with one (e.g. ECONNRESET). */
  error: string | null;
}

export interface RawOptions {
  localAddress?: string;
  /** Give up waiting after this long (the socket is then destroyed). */
  timeoutMs?: number;
  /** Resolve as soon as this many response heads have arrived (and their bodies, when content-length says how long). */
  responses?: number;
}

/** Status codes of the response heads in `text` (a response's body is skipped when it has a content-length). */
export function parseStatuses(text: string): number[] {
  const out: number[] = [];
  let i = 0;
  while (i < text.length) {
    const m = /HTTP\/1\.[01] (\d{3})[^\r\n]*\r\n/.exec(text.slice(i));
    if (m === null) break;
    out.push(Number(m[1]));
    const headStart = i + m.index;
    const headEnd = text.indexOf('\r\n\r\n', headStart);
    if (headEnd === -1) break;
    const head = text.slice(headStart, headEnd);
    const cl = /\r\ncontent-length: *(\d+)/i.exec(head);
    i = headEnd + 4 + (cl === null ? 0 : Number(cl[1]));
  }
  return out;
}

/** Complete responses in `text` (heads with their content-length bodies). */
function completeResponses(text: string): number {
  let n = 0;
  let i = 0;
  for (;;) {
    const m = /HTTP\/1\.[01] \d{3}[^\r\n]*\r\n/.exec(text.slice(i));
    if (m === null) return n;
    const headEnd = text.indexOf('\r\n\r\n', i + m.index);
    if (headEnd === -1) return n;
    const head = text.slice(i + m.index, headEnd);
    const cl = /\r\ncontent-length: *(\d+)/i.exec(head);
    const end = headEnd + 4 + (cl === null ? 0 : Number(cl[1]));
    if (end > text.length) return n;
    n++;
    i = end;
  }
}

/**
 * Opens a TCP connection to `base` (http://host:port), writes `bytes` exactly
 * (no normalisation of any kind), and collects the answer.
 */
export function rawRequest(base: string, bytes: string | Buffer | Array<string | Buffer>, opts: RawOptions = {}): Promise<RawAnswer> {
  const u = new URL(base);
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let done = false;
    let error: string | null = null;
    const socket = net.connect({ host: u.hostname, port: Number(u.port), ...(opts.localAddress ? { localAddress: opts.localAddress } : {}) });
    const finish = (closed: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      const text = Buffer.concat(chunks).toString('latin1');
      resolve({ text, statuses: parseStatuses(text), closed, error });
    };
    const timer = setTimeout(() => finish(false), opts.timeoutMs ?? 3000);
    socket.on('data', (c: Buffer) => {
      chunks.push(c);
      if (opts.responses !== undefined && completeResponses(Buffer.concat(chunks).toString('latin1')) >= opts.responses) finish(false);
    });
    socket.on('error', (e: NodeJS.ErrnoException) => {
      error = e.code ?? e.message;
    });
    socket.on('close', () => finish(true));
    socket.on('connect', () => {
      const parts = Array.isArray(bytes) ? bytes : [bytes];
      for (const p of parts) socket.write(p);
    });
  });
}

export interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

export interface CallOptions {
  method?: string;
  headers?: Record<string, string | string[]>;
  agent?: http.Agent | false;
  localAddress?: string;
  body?: string | Buffer;
  timeoutMs?: number;
}

/** One request with node:http: the path is sent exactly as given. Rejects on a socket error (a cut connection). */
export function call(base: string, path: string, opts: CallOptions = {}): Promise<Answer> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: u.hostname,
        port: u.port,
        path,
        method: opts.method ?? 'GET',
        headers: opts.headers ?? {},
        agent: opts.agent ?? false,
        ...(opts.localAddress !== undefined ? { localAddress: opts.localAddress } : {}),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('aborted', () => reject(Object.assign(new Error('response aborted'), { code: 'ECONNRESET' })));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
      },
    );
    req.setTimeout(opts.timeoutMs ?? 10_000, () => req.destroy(Object.assign(new Error('client timeout'), { code: 'ETIMEDOUT' })));
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** Number of open file descriptors of process `pid` (Linux /proc). */
export function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** Open sockets of process `pid` (Linux /proc). */
export function socketCount(pid: number): number {
  let n = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:')) n++;
    } catch {
      // closed while listing
    }
  }
  return n;
}


/** Resident set size of process `pid` in bytes (Linux /proc). */
export function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (m === null) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]) * 1024;
}

export const MB = 1024 * 1024;

/** The n-th percentile (0–100) of `values`. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

/** Runs `fn` over `items` with at most `limit` in flight. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i] as T, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/**
 * A conversation on one connection: writes `steps[0]`, waits for a response head
 * to come back, writes `steps[1]`, and so on; then waits `tailMs` (or until the
 * peer closes) and returns everything received.
 */
export function rawConversation(base: string, steps: readonly string[], opts: { stepTimeoutMs?: number; tailMs?: number } = {}): Promise<RawAnswer> {
  const u = new URL(base);
  return new Promise((resolve) => {
    let text = '';
    let closed = false;
    let error: string | null = null;
    let waiter: (() => void) | null = null;
    let connected = false;
    const socket = net.connect({ host: u.hostname, port: Number(u.port) });
    socket.on('data', (c: Buffer) => {
      text += c.toString('latin1');
      waiter?.();
    });
    socket.on('error', (e: NodeJS.ErrnoException) => (error = e.code ?? e.message));
    socket.on('close', () => {
      closed = true;
      if (!connected) resolve({ text, statuses: [], closed, error });
      waiter?.();
    });
    const heads = (): number => (text.match(/HTTP\/1\.[01] \d{3}/g) ?? []).length;
    const until = (cond: () => boolean, ms: number): Promise<void> =>
      new Promise((done) => {
        const finish = (): void => {
          clearTimeout(timer);
          waiter = null;
          done();
        };
        const timer = setTimeout(finish, ms);
        waiter = () => {
          if (cond() || closed) finish();
        };
        waiter();
      });
    socket.once('connect', () => {
      connected = true;
      void (async () => {
        for (let i = 0; i < steps.length; i++) {
          if (closed) break;
          const want = i;
          if (i > 0) await until(() => heads() >= want, opts.stepTimeoutMs ?? 1000);
          if (closed) break;
          socket.write(steps[i] as string);
        }
        await until(() => false, opts.tailMs ?? 400);
        socket.destroy();
        resolve({ text, statuses: parseStatuses(text), closed, error });
      })();
    });
  });
}

export interface QuietServed {
  child: ChildProcess;
  proxy: string;
  admin: string;
  /** The last 64 kB the process wrote to stderr. */
  stderrTail: () => string;
  stop: () => Promise<number | null>;
  exited: Promise<number | null>;
}

/**
 * Starts `keygate serve` on ports chosen here, with the log level given (e.g.
 * warn, for long runs whose info lines would fill the runner's memory), and
 * waits for /healthz. Keeps only the tail of its output.
 */
export async function startQuietServe(t: TestContext, config: string, args: string[] = [], env: Record<string, string> = {}): Promise<QuietServed> {
  const ports = await Promise.all([freePort(), freePort()]);
  const proxy = `http://127.0.0.1:${ports[0]}`;
  const admin = `http://127.0.0.1:${ports[1]}`;
  const childEnv: NodeJS.ProcessEnv = { LANG: 'C.UTF-8', KEYGATE_LOG_LEVEL: 'warn', ...env };
  for (const name of ['PATH', 'HOME', 'TMPDIR']) if (process.env[name] !== undefined) childEnv[name] = process.env[name];
  const child = spawn(process.execPath, [BIN, 'serve', '-c', config, '--listen', `127.0.0.1:${ports[0]}`, '--admin-listen', `127.0.0.1:${ports[1]}`, ...args], {
    cwd: REPO,
    env: childEnv,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let tail = '';
  child.stderr?.on('data', (c: Buffer) => {
    tail = (tail + c.toString('utf8')).slice(-65536);
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`keygate serve exited with ${child.exitCode}:\n${tail}`);
    const ok = await call(admin, '/healthz', { timeoutMs: 1000 }).then(
      (r) => r.status === 200,
      () => false,
    );
    if (ok) break;
    if (Date.now() > deadline) throw new Error(`keygate serve did not start:\n${tail}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    child,
    proxy,
    admin,
    stderrTail: () => tail,
    exited,
    stop: async () => {
      child.kill('SIGTERM');
      return exited;
    },
  };
}
