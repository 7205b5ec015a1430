/**
 * Microbenchmark of keygate's own per-request work, outside Node's http server
 * and undici: what keygate adds on top of a bare proxy. Steadier than the wrk
 * runs of bench/proxy.ts on a busy machine (best of 5 runs of N calls).
 *
 *   node --import tsx bench/proxy-micro.ts [--root DIR] [--n 200000]
 *
 * --root runs the same measurements against another checkout (a scratch copy
 * with changes), so that a change's gain can be measured before it lands.
 * The "logging variants" rows build pino loggers like src/cli/logger.ts does,
 * writing to /dev/null, to show what each logging option costs per line. The
 * script re-runs itself with stderr on /dev/null (keygate logs to fd 2).
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { openSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import pino from 'pino';

const { values } = parseArgs({ options: { root: { type: 'string' }, n: { type: 'string', default: '200000' } } });
const ROOT = path.resolve(values.root ?? path.join(path.dirname(fileURLToPath(import.meta.url)), '..'));
const N = Number(values.n);
const imp = async (p: string): Promise<Record<string, any>> => import(pathToFileURL(path.join(ROOT, p)).href) as Promise<Record<string, any>>;

const devnull = openSync('/dev/null', 'w');
const REDACT = {
  paths: ['key', '*.key', 'unmasked_key', '*.unmasked_key', 'headers["x-api-key"]', '*.headers["x-api-key"]', 'authorization', '*.authorization'],
  censor: '[redacted]',
};
let lastMs = 0;
let lastStamp = '';
const isoTimeCached = (): string => {
  const now = Date.now();
  if (now !== lastMs) {
    lastMs = now;
    lastStamp = `,"time":"${new Date(now).toISOString()}"`;
  }
  return lastStamp;
};
const makeLogger = (o: { redact: boolean; cachedTime: boolean; minLength: number }): pino.Logger =>
  pino(
    {
      name: 'keygate',
      level: 'info',
      base: { pid: process.pid },
      ...(o.redact ? { redact: REDACT } : {}),
      timestamp: o.cachedTime ? isoTimeCached : pino.stdTimeFunctions.isoTime,
    },
    pino.destination({ dest: devnull, sync: false, minLength: o.minLength }),
  );

function time(name: string, fn: () => void): void {
  for (let i = 0; i < 20_000; i++) fn();
  let best = Infinity;
  for (let r = 0; r < 5; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < N; i++) fn();
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / N);
  }
  process.stdout.write(`| ${name} | ${(best / 1000).toFixed(2)} |\n`);
}

async function main(): Promise<void> {
  const { ProxyServer } = await imp('src/proxy/server.ts');
  const { buildSnapshot } = await imp('src/proxy/snapshot.ts');
  const { Metrics } = await imp('src/admin/metrics.ts');
  const { downstreamResponseHeaders } = await imp('src/proxy/headers.ts');
  const key = 'kg_bench_000000_micro_key_value_0123';
  const digest = createHash('sha256').update(key).digest('hex');
  const groups = [
    { id: 1, name: 'admin', allow: null },
    { id: 2, name: 'all-users', allow: null },
    { id: 3, name: 'analysts', allow: [{ methods: ['GET', 'HEAD'], paths: ['/api/card/**', '/api/dashboard/**'] }] },
  ];
  const keys = [{ id: 42, name: 'bench key 0', digest, groupId: 3, disabled: false, expiresAt: null, allow: null }];
  for (let i = 0; i < 3000; i++) {
    keys.push({ id: 100 + i, name: `k${i}`, digest: createHash('sha256').update(`x${i}`).digest('hex'), groupId: 2, disabled: false, expiresAt: null, allow: null });
  }
  const snap = buildSnapshot(groups, keys);

  const build = (logger: pino.Logger): { proxy: any; metrics: any } => {
    const metrics = new Metrics();
    const proxy = new ProxyServer({
      config: { upstream: new URL('http://127.0.0.1:9'), keyHeader: 'x-api-key', forwardKey: false, trustedProxies: [], upstreamTimeoutMs: 30_000, failedAuthPerMinute: 60 },
      snapshot: () => snap,
      logger,
      metrics,
      touch: () => undefined,
    });
    return { proxy, metrics };
  };
  // The checkout's own logger (src/cli/logger.ts): it writes to fd 2, which is /dev/null here.
  const { rootLogger } = await imp('src/cli/logger.ts');
  const root = rootLogger({ KEYGATE_LOG_LEVEL: 'info' }) as pino.Logger;
  const { proxy, metrics } = build(root);
  const req = {
    url: '/api/card/1',
    method: 'GET',
    headers: { host: '127.0.0.1:8080', 'x-api-key': key },
    rawHeaders: ['Host', '127.0.0.1:8080', 'x-api-key', key],
    socket: { remoteAddress: '127.0.0.1' },
  };
  const upstreamRaw = ['content-type', 'application/json', 'content-length', '38', 'Date', 'Thu, 26 Nov 2026 15:23:08 GMT', 'Connection', 'keep-alive', 'Keep-Alive', 'timeout=5'].map((s) =>
    Buffer.from(s),
  );
  // As undici's parseHeaders gives them to a controller-based handler (src/proxy/forward.ts since the move to that API).
  const upstreamParsed = { 'content-type': 'application/json', 'content-length': '38', date: 'Thu, 26 Nov 2026 15:23:08 GMT', connection: 'keep-alive', 'keep-alive': 'timeout=5' };
  const now = Date.now();
  const head = proxy.readHead(req, false);
  const checked = proxy.check(req, head, now);
  if (!checked.ok) throw new Error('the micro request is not allowed');

  process.stdout.write(`keygate at ${ROOT}, best of 5 × ${N} calls\n\n| per request | µs |\n|---|---:|\n`);
  time('readHead: one pass over the raw request headers', () => proxy.readHead(req, false));
  time('check: throttle + authenticate (remembered per connection) + normalise + rules', () => proxy.check(req, head, now));
  time('check with a new connection each time (sha256 + Map look-up)', () => proxy.check({ ...req, socket: { remoteAddress: '127.0.0.1' } }, head, now));
  time('readHead + headersFor: upstream request headers', () => proxy.headersFor(req, proxy.readHead(req, false), checked.principal));
  // The checkout's own form: raw Buffers before the controller-based handler API, undici's parsed object after.
  const takesObject = String(downstreamResponseHeaders).includes('for (const name in');
  time('downstreamResponseHeaders (5 upstream headers)', () => downstreamResponseHeaders(takesObject ? upstreamParsed : upstreamRaw, proxy.via));
  time('metrics: request() + upstreamSeconds()', () => {
    metrics.request('forwarded', 200);
    metrics.upstreamSeconds(0.0042);
  });
  const quiet = build(rootLogger({ KEYGATE_LOG_LEVEL: 'warn' }) as pino.Logger);
  time('record() with KEYGATE_LOG_LEVEL=warn (metrics only)', () => quiet.proxy.record(req, 200, 'forwarded', checked.principal, now));
  time('record() at info (metrics + one queued log line; the batch is written every 50 ms)', () => proxy.record(req, 200, 'forwarded', checked.principal, now));

  process.stdout.write(`\nLogging variants (one request line, to /dev/null):\n\n| logger | µs |\n|---|---:|\n`);
  const line = { method: 'GET', path: '/api/card/1', status: 200, outcome: 'forwarded', duration_ms: 1.23, key_id: 42, key_name: 'bench key 0', peer: '127.0.0.1' };
  for (const [name, o] of [
    ['redact paths (as src/cli/logger.ts), isoTime, minLength 0', { redact: true, cachedTime: false, minLength: 0 }],
    ['no redaction, isoTime, minLength 0', { redact: false, cachedTime: false, minLength: 0 }],
    ['no redaction, ISO time cached per ms, minLength 0', { redact: false, cachedTime: true, minLength: 0 }],
    ['no redaction, ISO time cached per ms, minLength 4096', { redact: false, cachedTime: true, minLength: 4096 }],
  ] as const) {
    const l = makeLogger(o).child({ component: 'proxy' });
    time(name, () => l.info(line, 'request'));
  }
  const red = makeLogger({ redact: true, cachedTime: false, minLength: 0 }).child({ component: 'proxy' }, { redact: [] });
  time('redacting root, request lines through child({}, { redact: [] })', () => red.info(line, 'request'));
}

if (process.env.KEYGATE_MICRO_CHILD === undefined) {
  // Re-run with stderr on /dev/null: keygate's logger writes its lines to fd 2.
  const r = spawnSync(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
    stdio: ['ignore', 'inherit', 'ignore'],
    env: { ...process.env, KEYGATE_MICRO_CHILD: '1' },
  });
  process.exitCode = r.status ?? 1;
  if (r.status !== 0) process.stdout.write(`failed (exit ${r.status}); run with KEYGATE_MICRO_CHILD=1 to see its errors\n`);
} else {
  await main();
  setTimeout(() => process.exit(0), 300).unref();
}
