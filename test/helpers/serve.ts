/**
 * Starts a real `keygate serve` child process on loopback ports chosen by the
 * OS, and real upstream servers, for integration tests.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import net from 'node:net';
import type { TestContext } from 'node:test';
import { BIN, REPO } from './cli.ts';

export interface Served {
  child: ChildProcess;
  proxy: string;
  admin: string;
  /** Everything the process printed so far. */
  stdout: () => string;
  stderr: () => string;
  /** Sends SIGTERM and resolves with the exit code. */
  stop: (signal?: NodeJS.Signals) => Promise<number | null>;
  exited: Promise<number | null>;
}

export interface ServeOptions {
  args?: string[];
  env?: Record<string, string>;
  cwd?: string;
  /** Use `npm start -- …` instead of `node bin/keygate.js serve …`. */
  npmStart?: boolean;
  /** Another copy of bin/keygate.js to run (default: this repository's). */
  bin?: string;
}

function childEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { LANG: 'C.UTF-8' };
  for (const name of ['PATH', 'HOME', 'TMPDIR']) {
    const v = process.env[name];
    if (v !== undefined) env[name] = v;
  }
  return { ...env, ...extra };
}

/** Starts keygate serve and waits for its "keygate serving" log line. */
export async function startServe(t: TestContext, config: string, opts: ServeOptions = {}): Promise<Served> {
  const args = ['-c', config, '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', ...(opts.args ?? [])];
  const child = opts.npmStart
    ? // Its own process group, so that npm, sh and keygate are all stopped together.
      spawn('npm', ['start', '--silent', '--', ...args.slice(2)], { cwd: opts.cwd ?? REPO, env: childEnv(opts.env ?? {}), detached: true })
    : spawn(process.execPath, [opts.bin ?? BIN, 'serve', ...args], { cwd: opts.cwd ?? REPO, env: childEnv(opts.env ?? {}) });
  let out = '';
  let err = '';
  child.stdout?.on('data', (c: Buffer) => (out += c.toString('utf8')));
  child.stderr?.on('data', (c: Buffer) => (err += c.toString('utf8')));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const kill = (signal: NodeJS.Signals): void => {
    if (opts.npmStart === true && child.pid !== undefined) {
      try {
        process.kill(-child.pid, signal);
      } catch {
        // already gone
      }
    } else child.kill(signal);
  };
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      kill('SIGKILL');
      await exited;
    }
  });
  const addresses = await new Promise<{ proxy: string; admin: string }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`keygate serve did not start in time:\n${out}\n${err}`)), 20_000);
    const check = (): void => {
      const m = /"listen":"([^"]+)","admin_listen":"([^"]+)"/.exec(err);
      if (m !== null) {
        clearTimeout(timer);
        // Only until the daemon serves: a noisy run must not rescan all of stderr on every chunk.
        child.stderr?.off('data', check);
        resolve({ proxy: `http://${m[1]}`, admin: `http://${m[2]}` });
      }
    };
    child.stderr?.on('data', check);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`keygate serve exited with ${String(code)} before serving:\n${out}\n${err}`));
    });
  });
  return {
    child,
    ...addresses,
    stdout: () => out,
    stderr: () => err,
    exited,
    stop: async (signal = 'SIGTERM') => {
      kill(signal);
      return exited;
    },
  };
}

/** Runs `keygate serve` expecting it to fail at start; resolves with its exit code and output. */
export function serveExpectingFailure(config: string, env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, 'serve', '-c', config, '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0'], {
      cwd: REPO,
      env: childEnv(env),
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => (err += c.toString('utf8')));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: out, stderr: err });
    });
  });
}

export interface SeenRequest {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  rawHeaders: string[];
}

export interface Upstream {
  server: Server;
  url: string;
  seen: SeenRequest[];
}

/** A real HTTP upstream on a loopback port; `handler` answers, every request is recorded. */
export async function startUpstream(
  t: TestContext,
  handler: (req: IncomingMessage, res: ServerResponse) => void = (req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ ok: true, url: req.url }));
    });
  },
): Promise<Upstream> {
  const seen: SeenRequest[] = [];
  const server = createServer((req, res) => {
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders });
    handler(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  t.after(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  const a = server.address() as net.AddressInfo;
  return { server, url: `http://127.0.0.1:${a.port}`, seen };
}

/** A loopback port that nothing listens on (bound, then released). */
export async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', () => resolve()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `fn` until it returns true or `timeoutMs` passes; returns whether it did. */
export async function eventually(fn: () => Promise<boolean> | boolean, timeoutMs = 30_000, stepMs = 25): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await fn()) return true;
    await sleep(stepMs);
  }
  return fn();
}
