/**
 * Upstream faults: a raw TCP "upstream" that misbehaves in a chosen way per
 * request path (resets, hangs, garbage, huge headers, bodies cut short), and a
 * driver that sends many such requests through a real `keygate serve`,
 * checking each answer and the proxy's file descriptors and memory. Shared by
 * the fast suite (~1,000 requests) and the soak suite (10,000).
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import type { TestContext } from 'node:test';
import { tempConfig } from './tmp.ts';
import { sleep } from './serve.ts';
import { call, fdCount, MB, mapLimit, rssBytes, startQuietServe } from './hostile.ts';

export const FAULT_KEY = 'kg_faults_admin_key_5Rk2Pw9Xq7Lm3Zt';

/** What the client must get for each kind of fault. */
export const FAULTS = {
  ok: [200],
  'extra-bytes': [200],
  'reset-before-headers': [502],
  'close-before-headers': [502],
  'close-mid-headers': [502],
  garbage: [502],
  'binary-garbage': [502],
  'huge-header': [502],
  'bad-content-length': [502],
  'bad-status-line': [502],
  hang: [504],
  // Once the head has been passed on, the only honest signal left is a cut connection.
  'reset-mid-body': ['cut'],
  'hang-mid-body': ['cut'],
  'close-mid-chunked': ['cut'],
  'short-body': ['cut'],
} as const satisfies Record<string, ReadonlyArray<number | 'cut'>>;

export type Fault = keyof typeof FAULTS;

export interface FaultUpstream {
  port: number;
  /** Stops listening and drops every connection: requests are then refused. */
  down: () => Promise<void>;
  /** Listens again on the same port. */
  up: () => Promise<void>;
  connections: () => number;
  close: () => Promise<void>;
}

/** A raw upstream that answers `/ok` properly and misbehaves on every other fault path. */
export async function startFaultUpstream(t: TestContext): Promise<FaultUpstream> {
  const sockets = new Set<net.Socket>();
  const hanging = new Set<net.Socket>();
  const onConnection = (socket: net.Socket): void => {
    sockets.add(socket);
    socket.on('close', () => {
      sockets.delete(socket);
      hanging.delete(socket);
    });
    socket.on('error', () => undefined);
    let buf = '';
    socket.on('data', (c: Buffer) => {
      buf += c.toString('latin1');
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end === -1) return;
        const head = buf.slice(0, end);
        buf = buf.slice(end + 4);
        const path = /^[A-Z]+ (\S+)/.exec(head)?.[1] ?? '/';
        const fault = (path.split('?')[0]?.slice(1) ?? 'ok') as Fault;
        if (!answer(socket, fault)) return;
      }
    });
  };
  /** Returns true when the connection stays usable for another request. */
  const answer = (s: net.Socket, fault: Fault): boolean => {
    switch (fault) {
      case 'ok':
        s.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok');
        return true;
      case 'extra-bytes':
        s.end('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nokEXTRA BYTES AFTER THE BODY');
        return false;
      case 'reset-before-headers':
        s.resetAndDestroy();
        return false;
      case 'close-before-headers':
        s.end();
        return false;
      case 'close-mid-headers':
        s.end('HTTP/1.1 200 OK\r\nContent-Type: text/pl');
        return false;
      case 'garbage':
        s.end('this is not HTTP at all\r\n\r\n');
        return false;
      case 'binary-garbage':
        s.end(Buffer.from(Array.from({ length: 512 }, (_, i) => (i * 7919) % 256)));
        return false;
      case 'huge-header':
        s.end(`HTTP/1.1 200 OK\r\nX-Huge: ${'h'.repeat(200_000)}\r\nContent-Length: 2\r\n\r\nok`);
        return false;
      case 'bad-content-length':
        s.end('HTTP/1.1 200 OK\r\nContent-Length: twelve\r\n\r\nok');
        return false;
      case 'bad-status-line':
        s.end('HTTP/1.1 OK 200\r\nContent-Length: 2\r\n\r\nok');
        return false;
      case 'hang':
        hanging.add(s);
        return false;
      case 'reset-mid-body':
        s.write(`HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n${'b'.repeat(1000)}`);
        setTimeout(() => s.resetAndDestroy(), 20);
        return false;
      case 'hang-mid-body':
        s.write(`HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n${'b'.repeat(1000)}`);
        hanging.add(s);
        return false;
      case 'close-mid-chunked':
        s.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n');
        setTimeout(() => s.end(), 20);
        return false;
      case 'short-body':
        s.write('HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\nonly a little');
        setTimeout(() => s.end(), 20);
        return false;
      default:
        s.end('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n');
        return false;
    }
  };
  let server = net.createServer(onConnection);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const port = (server.address() as net.AddressInfo).port;
  const close = async (): Promise<void> => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => (server.listening ? server.close(() => resolve()) : resolve()));
  };
  t.after(close);
  return {
    port,
    down: close,
    up: async () => {
      server = net.createServer(onConnection);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, '127.0.0.1', () => resolve());
      });
    },
    connections: () => sockets.size,
    close,
  };
}

export function faultConfig(port: number, timeoutMs: number): string {
  return `version: 1
config:
  keygate:
    upstream: http://127.0.0.1:${port}
    upstream_timeout_ms: ${timeoutMs}
  api-keys:
    - name: faults
      group: admin
      key: ${FAULT_KEY}
`;
}

export type Outcome = number | 'cut' | 'client-timeout';

async function request(base: string, path: string, agent: http.Agent): Promise<{ outcome: Outcome; body: string }> {
  try {
    const r = await call(base, path, { headers: { 'x-api-key': FAULT_KEY }, agent, timeoutMs: 15_000 });
    return { outcome: r.status, body: r.text };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return { outcome: code === 'ETIMEDOUT' ? 'client-timeout' : 'cut', body: '' };
  }
}

export interface FaultRunOptions {
  requests: number;
  concurrency?: number;
  /** keygate's upstream_timeout_ms. */
  timeoutMs?: number;
  log?: (line: string) => void;
  /** Allowed RSS growth over the run. */
  maxRssGrowthMb?: number;
}

export interface FaultRunStats {
  counts: Record<string, Record<string, number>>;
  fdBefore: number;
  fdAfter: number;
  rssBeforeMb: number;
  rssAfterMb: number;
  refusedStatuses: Record<string, number>;
}

/**
 * Sends `requests` requests spread over every fault kind through a real keygate,
 * checks each answer against FAULTS, then takes the upstream down (refused →
 * 502) and back up (→ 200), and compares the proxy's fds and RSS before and after.
 */
export async function runUpstreamFaults(t: TestContext, opts: FaultRunOptions): Promise<FaultRunStats> {
  const t0 = performance.now();
  const log0 = opts.log ?? (() => undefined);
  const log = (l: string): void => log0(`[${((performance.now() - t0) / 1000).toFixed(1)} s] ${l}`);
  const concurrency = opts.concurrency ?? 16;
  const up = await startFaultUpstream(t);
  // Long enough that a healthy answer is never late, even on a loaded CI machine.
  const dir = tempConfig(t, faultConfig(up.port, opts.timeoutMs ?? 2500));
  // Warn-level logs: thousands of request lines would only slow the runner down.
  const kg = await startQuietServe(t, dir.config, ['--db', dir.db]);
  const pid = kg.child.pid as number;
  log('keygate serving');
  const kinds = Object.keys(FAULTS) as Fault[];

  type Result = { path: string; outcome: Outcome; body: string; ms: number };
  const isHang = (p: string): boolean => p.startsWith('/hang');
  const round = async (paths: string[], concurrency: number): Promise<Result[]> => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
    try {
      return await mapLimit(paths, concurrency, async (path) => {
        const started = performance.now();
        const r = await request(kg.proxy, path, agent);
        return { path, ...r, ms: performance.now() - started };
      });
    } finally {
      agent.destroy();
    }
  };
  const okRound = (): Promise<unknown> => round(Array.from({ length: concurrency * 4 }, () => '/ok'), concurrency);
  // Settles the proxy to a comparable state: one round of good requests, clients gone, then measure.
  const measure = async (): Promise<{ fd: number; rss: number; heap: number }> => {
    await okRound();
    await sleep(300);
    // Keep-alive connections to the upstream come and go with the pool: count the rest.
    return { fd: fdCount(pid) - up.connections(), rss: rssBytes(pid), heap: await heapUsed(kg.admin) };
  };

  // Hanging kinds hold a connection for the whole timeout (undici's timers tick about
  // once a second, so they take up to a second longer still): send them less often, and
  // beside the others on connections of their own, since they only wait.
  const weighted = kinds.flatMap((k) => (k === 'hang' || k === 'hang-mid-body' ? [k] : Array<Fault>(6).fill(k)));
  const mixed = (n: number): string[] => Array.from({ length: n }, (_, i) => `/${weighted[(i * 7) % weighted.length] as string}?i=${i}`);
  // Warm-up: every code path once, so that lazily allocated memory is in the baseline.
  await round(mixed(Math.min(150, opts.requests)).filter((p) => !isHang(p)), concurrency);
  log('warmed up');
  const before = await measure();
  log(`proxy pid ${pid}: ${before.fd} fds, RSS ${(before.rss / MB).toFixed(1)} MB before ${opts.requests} fault requests`);

  const counts: Record<string, Record<string, number>> = {};
  // In slices, with RSS and V8's heap (from /metrics) after each: a leak grows with every slice.
  const slices = Math.max(1, Math.min(10, Math.floor(opts.requests / 500)));
  const all = mixed(opts.requests);
  const others = all.filter((p) => !isHang(p));
  const hanging = round(all.filter(isHang), 64);
  const results: Result[] = [];
  const curve: Array<{ fd: number; rss: number; heap: number }> = [];
  for (let k = 0; k < slices; k++) {
    results.push(...(await round(others.slice(Math.floor((k * others.length) / slices), Math.floor(((k + 1) * others.length) / slices)), concurrency)));
    if (k < slices - 1) curve.push(await measure());
  }
  results.push(...(await hanging));
  for (const r of results) {
    const kind = (r.path.split('?')[0] ?? '').slice(1) as Fault;
    const byOutcome = (counts[kind] ??= {});
    byOutcome[String(r.outcome)] = (byOutcome[String(r.outcome)] ?? 0) + 1;
  }
  log(`outcomes: ${JSON.stringify(counts)}`);
  const slow: Record<string, number> = {};
  for (const r of results) {
    const kind = (r.path.split('?')[0] ?? '').slice(1);
    slow[kind] = Math.max(slow[kind] ?? 0, Math.round(r.ms));
  }
  log(`slowest answer per kind (ms): ${JSON.stringify(slow)}`);
  for (const r of results) {
    const kind = (r.path.split('?')[0] ?? '').slice(1) as Fault;
    const allowed = FAULTS[kind] as ReadonlyArray<Outcome>;
    assert.ok(allowed.includes(r.outcome), `${r.path}: got ${String(r.outcome)}, expected ${allowed.join(' or ')} (all outcomes: ${JSON.stringify(counts[kind])})`);
    if (r.outcome === 502) assert.match(r.body, /"error":"bad_gateway"/);
    if (r.outcome === 504) assert.match(r.body, /"error":"gateway_timeout"/);
  }

  // Refused: nothing listens on the upstream port.
  await up.down();
  const refused = await round(Array.from({ length: 50 }, (_, i) => `/ok?refused=${i}`), concurrency);
  const refusedStatuses: Record<string, number> = {};
  for (const r of refused) refusedStatuses[String(r.outcome)] = (refusedStatuses[String(r.outcome)] ?? 0) + 1;
  assert.deepEqual(refusedStatuses, { 502: 50 }, 'a refused upstream gives 502');
  await up.up();

  // The proxy keeps serving, and holds no more descriptors or memory than before.
  const recovered = await round(Array.from({ length: 100 }, (_, i) => `/ok?after=${i}`), concurrency);
  assert.ok(recovered.every((r) => r.outcome === 200), `after the faults: ${JSON.stringify(recovered.filter((r) => r.outcome !== 200).slice(0, 5))}`);
  const after = await measure();
  log(`proxy pid ${pid}: ${after.fd} fds, RSS ${(after.rss / MB).toFixed(1)} MB after`);
  assert.ok(after.fd <= before.fd + 3, `file descriptors (other than pooled upstream connections) grew from ${before.fd} to ${after.fd}`);
  // RSS and the heap swing by tens of MB with the garbage collector: a leak is growth that
  // even the lowest of the last few measurements shows.
  curve.push(after);
  const last = curve.slice(-3);
  const growth = (Math.min(...last.map((c) => c.rss)) - before.rss) / MB;
  log(`RSS and heap after each slice: ${curve.map((c) => `${(c.rss / MB).toFixed(0)}/${(c.heap / MB).toFixed(0)}`).join(', ')} MB (baseline ${(before.rss / MB).toFixed(0)}/${(before.heap / MB).toFixed(0)})`);
  assert.ok(growth < (opts.maxRssGrowthMb ?? 40), `RSS grew by ${growth.toFixed(1)} MB (${(before.rss / MB).toFixed(1)} MB → at least ${((before.rss / MB) + growth).toFixed(1)} MB)`);
  assert.equal(kg.child.exitCode, null, 'keygate is still running');
  return {
    counts,
    fdBefore: before.fd,
    fdAfter: after.fd,
    rssBeforeMb: before.rss / MB,
    rssAfterMb: after.rss / MB,
    refusedStatuses,
  };
}

/** V8 heap in use in keygate's main thread, from its Prometheus metrics. */
async function heapUsed(admin: string): Promise<number> {
  const text = (await call(admin, '/metrics')).text;
  const m = /^keygate_nodejs_heap_size_used_bytes (\d+(?:\.\d+)?(?:e\+\d+)?)/m.exec(text);
  return m === null ? 0 : Number(m[1]);
}
