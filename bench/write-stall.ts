/**
 * Write stalls: does serving stall while keys are written? A real `keygate
 * serve` with N keys in its file, under wrk, while the management API creates,
 * updates, regenerates and deletes keys and groups and one file edit rotates 1%
 * of the keys. Measured side by side with an earlier keygate (by default the
 * commit before the control plane), each in its own process, in one run.
 *
 *   node --import tsx bench/write-stall.ts [--sizes 10000,100000] [--writes 100]
 *        [--baseline-commit REF | --baseline DIR] [--duration 10] [--no-write]
 *
 * Per target and size: proxied p50/p99/max under wrk at rest and during the
 * writes; the serving thread's largest event-loop delay (keygate's own
 * /metrics, keygate_nodejs_eventloop_lag_max_seconds, reset at each scrape);
 * the slowest answer of /healthz polled every 10 ms on the admin listener; how
 * long the API writes took; when the file edit was enforced; and RSS.
 * Design §6: with 100,000 keys, event-loop delay ≤ 50 ms and proxied p99 within
 * 2× its idle value while the writes and the edit run.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { updateResults } from './results.ts';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..');
const DEFAULT_BASELINE = 'd7e956e';

const { values: opt } = parseArgs({
  options: {
    sizes: { type: 'string', default: '10000,100000' },
    writes: { type: 'string', default: '100' },
    duration: { type: 'string', default: '10' },
    connections: { type: 'string', default: '20' },
    baseline: { type: 'string' },
    'baseline-commit': { type: 'string', default: DEFAULT_BASELINE },
    'no-write': { type: 'boolean', default: false },
  },
});
const SIZES = String(opt.sizes).split(',').map(Number);
const WRITES = Number(opt.writes);
const IDLE_SECONDS = Number(opt.duration);
const CONNECTIONS = Number(opt.connections);

const children = new Set<ChildProcess>();
const scratch: string[] = [];
let worktree: string | null = null;

function cleanup(): void {
  for (const c of children) c.kill('SIGKILL');
  for (const d of scratch) rmSync(d, { recursive: true, force: true });
  if (worktree !== null) spawnSync('git', ['worktree', 'remove', '--force', worktree], { cwd: ROOT });
}
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => process.exit(130));

const log = (m: string): void => void process.stderr.write(`[write-stall] ${m}\n`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const sha256 = (s: string | Buffer): string => createHash('sha256').update(s).digest('hex');

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const p = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return p;
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });

function request(port: number, method: string, p: string, headers: Record<string, string> = {}, body?: string): Promise<{ status: number; body: string; ms: number }> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: p, method, headers: { ...headers, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) }, agent }, (res) => {
      let out = '';
      res.on('data', (c: Buffer) => (out += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: out, ms: performance.now() - t0 }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

// ---------------------------------------------------------------------------
// Files

const ADMIN_KEY = 'kg_writestall_admin_key_0123456789';
const WRK_KEY = 'kg_writestall_wrk_key_0123456789ab';

function keyOf(i: number, rotated: boolean): string {
  return `kg_stall_${rotated ? 'r' : 'k'}${String(i).padStart(7, '0')}_abcdefghij`;
}

function configText(n: number, upstreamPort: number, rotatedPercent: number): string {
  const rotateEvery = rotatedPercent === 0 ? 0 : Math.round(100 / rotatedPercent);
  const out = [
    'version: 1',
    'config:',
    '  keygate:',
    `    upstream: http://127.0.0.1:${upstreamPort}`,
    '    failed_auth_per_minute: 1000000',
    '    max_deletes: 1000000',
    '  groups:',
    '    - name: analysts',
    '      allow:',
    '        - methods: [GET, HEAD]',
    '          paths: ["/api/card/**", "/api/dashboard/**"]',
    ...Array.from({ length: 4 }, (_, g) => [`    - name: team-${g}`, '      allow:', `        - paths: ["/team/${g}/**"]`]).flat(),
    '  api-keys:',
    '    - name: admin',
    '      group: admin',
    `      key: ${ADMIN_KEY}`,
    '    - name: wrk',
    '      group: analysts',
    `      key: ${WRK_KEY}`,
  ];
  for (let i = 0; i < n; i++) {
    const rotated = rotateEvery > 0 && i % rotateEvery === 0;
    const key = keyOf(i, rotated);
    out.push(`    - name: key-${i}`, `      group: ${i % 5 === 0 ? 'analysts' : `team-${i % 4}`}`);
    out.push(i % 2 === 0 ? `      key: ${key}` : `      key_hash: "sha256:${sha256(key)}"`);
  }
  return `${out.join('\n')}\n`;
}

// ---------------------------------------------------------------------------
// Processes

function start(name: string, argv: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; quiet?: boolean } = {}): ChildProcess {
  const child = spawn(argv[0] as string, argv.slice(1), {
    cwd: opts.cwd ?? ROOT,
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', opts.quiet === true ? 'ignore' : 'pipe'],
  });
  children.add(child);
  child.once('exit', () => children.delete(child));
  child.stderr?.resume();
  child.on('error', (e) => log(`${name}: ${e.message}`));
  return child;
}

async function waitFor(what: string, check: () => Promise<boolean>, ms = 600_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check().catch(() => false)) return;
    await sleep(50);
  }
  throw new Error(`${what}: not ready after ${ms} ms`);
}

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m === null ? 0 : Number(m[1]) / 1024;
}

interface WrkResult {
  requests: number;
  latency_us: { p50: number; p90: number; p99: number; max: number };
  errors: Record<string, number>;
}

/** Runs wrk until `stop` resolves (SIGINT: wrk prints its summary), or for `seconds`. */
function wrk(port: number, opts: { seconds?: number; stop?: Promise<void> }): Promise<WrkResult> {
  const argv = ['wrk', '-t1', `-c${CONNECTIONS}`, `-d${opts.seconds ?? 3600}s`, '--timeout', '10s', '-H', `x-api-key: ${WRK_KEY}`, '-s', path.join(HERE, 'proxy-servers', 'report.lua'), `http://127.0.0.1:${port}/api/card/1`];
  const child = start('wrk', argv);
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  void opts.stop?.then(() => child.kill('SIGINT'));
  return new Promise((resolve, reject) => {
    child.once('exit', () => {
      const json = out.trim().split('\n').findLast((l) => l.startsWith('{'));
      if (json === undefined) reject(new Error(`wrk printed no result:\n${out}`));
      else resolve(JSON.parse(json) as WrkResult);
    });
  });
}

/** Polls /healthz every 10 ms until stopped; returns the slowest answer (ms). */
function probe(adminPort: number): { stop: () => Promise<{ max: number; n: number }> } {
  let run = true;
  let max = 0;
  let n = 0;
  const loop = (async () => {
    while (run) {
      const r = await request(adminPort, 'GET', '/healthz');
      max = Math.max(max, r.ms);
      n++;
      await sleep(10);
    }
  })();
  return {
    stop: async () => {
      run = false;
      await loop;
      return { max, n };
    },
  };
}

async function eventLoopMaxMs(adminPort: number): Promise<number> {
  const m = await request(adminPort, 'GET', '/metrics');
  const v = /^keygate_nodejs_eventloop_lag_max_seconds (\S+)$/m.exec(m.body);
  return v === null ? Number.NaN : Number(v[1]) * 1000;
}

// ---------------------------------------------------------------------------
// One target at one size

interface Measured {
  target: string;
  keys: number;
  startSeconds: number;
  rssMb: number;
  idle: WrkResult;
  idleLoopMs: number;
  idleProbeMs: number;
  busy: WrkResult;
  busyLoopMs: number;
  busyProbeMs: number;
  writesMedianMs: number;
  writesMaxMs: number;
  writeErrors: string[];
  editEnforcedSeconds: number;
}

async function measure(target: { name: string; root: string }, n: number, upstreamPort: number): Promise<Measured> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kg-stall-'));
  scratch.push(dir);
  const config = path.join(dir, 'config.yml');
  writeFileSync(config, configText(n, upstreamPort, 0));
  const edited = configText(n, upstreamPort, 1);
  const [port, adminPort] = [await freePort(), await freePort()];
  const t0 = performance.now();
  const kg = start(target.name, ['node', path.join(target.root, 'bin', 'keygate.js'), 'serve', '-c', config, '--db', path.join(dir, 'keygate.db'), '--listen', `127.0.0.1:${port}`, '--admin-listen', `127.0.0.1:${adminPort}`], { cwd: dir, quiet: true });
  await waitFor(`${target.name} ready`, async () => (await request(adminPort, 'GET', '/readyz')).status === 200);
  const startSeconds = (performance.now() - t0) / 1000;
  await waitFor(`${target.name} proxy`, async () => (await request(port, 'GET', '/api/card/1', { 'x-api-key': WRK_KEY })).status === 200);
  // Let the start-up's garbage go (and an earlier keygate's reload worker retire) before measuring.
  await sleep(8000);
  const rss = rssMb(kg.pid as number);

  // At rest.
  await eventLoopMaxMs(adminPort);
  let p = probe(adminPort);
  const idle = await wrk(port, { seconds: IDLE_SECONDS });
  const idleProbe = await p.stop();
  const idleLoopMs = await eventLoopMaxMs(adminPort);

  // During the writes.
  const admin = { 'x-api-key': ADMIN_KEY };
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  await eventLoopMaxMs(adminPort);
  p = probe(adminPort);
  const busyRun = wrk(port, { stop: finished });
  await sleep(1000);
  const writeMs: number[] = [];
  const writeErrors: string[] = [];
  let editAt = 0;
  let editEnforced = 0;
  const api = async (method: string, url: string, body?: object): Promise<Record<string, unknown>> => {
    const r = await request(adminPort, method, url, admin, body === undefined ? undefined : JSON.stringify(body));
    writeMs.push(r.ms);
    if (r.status >= 300) writeErrors.push(`${method} ${url} → ${r.status} ${r.body.slice(0, 120)}`);
    return r.status === 204 || r.body === '' ? {} : (JSON.parse(r.body) as Record<string, unknown>);
  };
  const editWatch = (async () => {
    await waitFor('the edit', async () => editAt > 0);
    const want = sha256(edited);
    const rotated = keyOf(0, true);
    await waitFor('the edit applied', async () => (await request(port, 'GET', '/api/card/1', { 'x-api-key': rotated })).status === 200);
    editEnforced = (performance.now() - editAt) / 1000;
    const s = JSON.parse((await request(adminPort, 'GET', '/status')).body) as { applied: { sha256: string } };
    if (s.applied.sha256 !== want) writeErrors.push('the edit was enforced but /status names other bytes');
  })();
  let writes = 0;
  const edit = (): void => {
    // One file edit, a rename-over save as editors and GitOps tools make.
    writeFileSync(`${config}.tmp`, edited);
    renameSync(`${config}.tmp`, config);
    editAt = performance.now();
  };
  for (let cycle = 0; writes < WRITES; cycle++) {
    if (writes >= Math.min(10, WRITES / 2) && editAt === 0) edit();
    const g = await api('POST', '/api/permissions/group', { name: `stall-group-${cycle}` });
    const k = await api('POST', '/api/api-key', { name: `stall-key-${cycle}`, group_id: g.id });
    await api('PUT', `/api/api-key/${String(k.id)}`, { name: `stall-key-${cycle}-renamed`, description: 'renamed' });
    await api('PUT', `/api/api-key/${String(k.id)}/regenerate`);
    await api('DELETE', `/api/api-key/${String(k.id)}`);
    await api('DELETE', `/api/permissions/group/${String(g.id)}`);
    writes += 6;
  }
  if (editAt === 0) edit();
  await editWatch;
  done();
  const busy = await busyRun;
  const busyProbe = await p.stop();
  const busyLoopMs = await eventLoopMaxMs(adminPort);
  kg.kill('SIGTERM');
  await new Promise((r) => kg.once('exit', r));
  const sorted = [...writeMs].sort((a, b) => a - b);
  return {
    target: target.name,
    keys: n,
    startSeconds,
    rssMb: rss,
    idle,
    idleLoopMs,
    idleProbeMs: idleProbe.max,
    busy,
    busyLoopMs,
    busyProbeMs: busyProbe.max,
    writesMedianMs: sorted[sorted.length >> 1] ?? 0,
    writesMaxMs: sorted.at(-1) ?? 0,
    writeErrors,
    editEnforcedSeconds: editEnforced,
  };
}

// ---------------------------------------------------------------------------

function baselineRoot(): { name: string; root: string } {
  if (opt.baseline !== undefined) return { name: `baseline (${path.basename(opt.baseline)})`, root: path.resolve(opt.baseline) };
  const ref = String(opt['baseline-commit']);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kg-baseline-'));
  rmSync(dir, { recursive: true });
  const r = spawnSync('git', ['worktree', 'add', '--detach', dir, ref], { cwd: ROOT, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`git worktree add ${ref}: ${r.stderr}`);
  worktree = dir;
  symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'));
  return { name: `before (${ref})`, root: dir };
}

const f = (n: number): string => (n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2));
const ms = (us: number): string => f(us / 1000);

async function main(): Promise<void> {
  if (spawnSync('wrk', ['--version']).error !== undefined) throw new Error('wrk is not installed (apt-get install wrk, or run bench/proxy.sh once)');
  const head = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).stdout.trim();
  const targets = [baselineRoot(), { name: `after (${head})`, root: ROOT }];
  const upPort = await freePort();
  const up = start('upstream', ['node', '--import', 'tsx', path.join(HERE, 'proxy-servers', 'upstream.ts'), String(upPort)]);
  await waitFor('upstream', async () => (await request(upPort, 'GET', '/')).status === 200);
  const results: Measured[] = [];
  for (const n of SIZES) {
    for (const t of targets) {
      log(`${t.name}: ${n} keys`);
      const m = await measure(t, n, upPort);
      log(`  idle p99 ${ms(m.idle.latency_us.p99)} ms, busy p99 ${ms(m.busy.latency_us.p99)} ms, loop max ${f(m.busyLoopMs)} ms, writes ${f(m.writesMedianMs)}/${f(m.writesMaxMs)} ms`);
      results.push(m);
    }
  }
  up.kill('SIGTERM');

  const rows = results.map((m) =>
    [
      m.keys.toLocaleString('en-US'),
      m.target,
      `${ms(m.idle.latency_us.p50)} / ${ms(m.idle.latency_us.p99)} / ${ms(m.idle.latency_us.max)}`,
      `${ms(m.busy.latency_us.p50)} / ${ms(m.busy.latency_us.p99)} / ${ms(m.busy.latency_us.max)}`,
      `${(m.busy.latency_us.p99 / m.idle.latency_us.p99).toFixed(2)}×`,
      `${f(m.idleLoopMs)} / **${f(m.busyLoopMs)}**`,
      `${f(m.idleProbeMs)} / ${f(m.busyProbeMs)}`,
      `${f(m.writesMedianMs)} / ${f(m.writesMaxMs)}`,
      f(m.editEnforcedSeconds),
      f(m.startSeconds),
      f(m.rssMb),
      String(m.writeErrors.length + Object.values(m.busy.errors).reduce((a, b) => a + b, 0)),
    ].join(' | '),
  );
  const section = [
    '## Write stalls',
    '',
    'Command: `node --import tsx bench/write-stall.ts` (needs wrk)',
    '',
    `- Date: ${new Date().toISOString()}; after = ${head}, before = ${targets[0]?.name}`,
    `- Machine: \`nproc\` = ${os.availableParallelism()}, ${os.cpus()[0]?.model ?? '?'}, Node ${process.version}; nothing pinned`,
    `- Each keygate serves N keys from its file (half \`key:\`, half \`key_hash:\`, 5 groups with rules) in front of bench/proxy-servers/upstream.ts, default logging (one line per request, stderr to /dev/null).`,
    `- At rest: wrk -t1 -c${CONNECTIONS} -d${IDLE_SECONDS}s with a valid key. During writes: the same wrk while the management API runs ${WRITES} writes one after another (create group, create key, rename key, regenerate key, delete key, delete group, over and over) and, after the 10th, one rename-over save of the file rotating 1% of the keys; wrk stops when the writes are done and the edit is enforced.`,
    '- Event-loop delay: the serving thread\'s own `keygate_nodejs_eventloop_lag_max_seconds` (10 ms resolution), reset by a scrape just before each phase. /healthz max: the slowest answer of the admin listener polled every 10 ms during the phase.',
    '',
    '| keys | keygate | idle p50 / p99 / max ms | during writes p50 / p99 / max ms | p99 writes/idle | event-loop delay max, idle / writes, ms | /healthz max, idle / writes, ms | API write median / max ms | edit enforced after s | start s | RSS MB | errors |',
    '|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...rows.map((r) => `| ${r} |`),
    '',
    'Design §6 bar, at 100,000 keys: event-loop delay ≤ 50 ms and p99 during writes ≤ 2× idle.',
  ].join('\n');
  process.stdout.write(`${section}\n`);
  for (const m of results) for (const e of m.writeErrors.slice(0, 5)) log(`${m.target} ${m.keys}: ${e}`);
  if (opt['no-write'] !== true) updateResults(section);
}

await main();
cleanup();
process.exit(0);
