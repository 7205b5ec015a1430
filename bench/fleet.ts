/**
 * The PostgreSQL store beside SQLite (issue 14, design §7):
 *
 *   node --import tsx bench/fleet.ts                      # everything, writes bench/RESULTS.md
 *   node --import tsx bench/fleet.ts --parts reconcile --sizes 10000 --no-write
 *   node --import tsx bench/fleet.ts --parts proxy,propagation --rounds 3 --duration 5
 *
 * Parts:
 *   reconcile    first apply of 10,000 and 100,000 keys into an empty database, the no-op
 *                re-apply of the same file, and an apply that edits 1% of the keys, on each
 *                store, interleaved (SQLite, PostgreSQL, SQLite, …); plus the whole-table read
 *                the control plane publishes. The config is loaded once: this is the store's share.
 *   proxy        wrk against `keygate serve` on SQLite and on PostgreSQL (the same 3,000-key
 *                config, the same upstream), in interleaved rounds. The request path never
 *                touches the store, so the two should be equal within noise.
 *   propagation  two replicas on one PostgreSQL database: a key created (then deleted) through
 *                replica 1's management API, and the time until replica 2's proxy admits (then
 *                refuses) it, polled every 5 ms. Issue 14 asks for ≤ 1 s.
 *
 * PostgreSQL: $KEYGATE_BENCH_POSTGRES_URL, else $KEYGATE_TEST_POSTGRES_URL, else
 * postgres://127.0.0.1:5432/test; each measurement gets a database of its own (kg_bench_…),
 * dropped afterwards. Everything binds 127.0.0.1 and is stopped at the end.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { loadConfigFile } from '../src/config/load.ts';
import type { DesiredState } from '../src/config/types.ts';
import { reconcile } from '../src/reconcile/engine.ts';
import { openStore } from '../src/store/open.ts';
import { updateResults } from './results.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const BIN = path.join(ROOT, 'bin/keygate.js');
const PG_URL = process.env.KEYGATE_BENCH_POSTGRES_URL ?? process.env.KEYGATE_TEST_POSTGRES_URL ?? 'postgres://127.0.0.1:5432/test';

const { values: args } = parseArgs({
  options: {
    parts: { type: 'string', default: 'reconcile,proxy,propagation' },
    sizes: { type: 'string', default: '10000,100000' },
    reps: { type: 'string', default: '3' },
    rounds: { type: 'string', default: '6' },
    duration: { type: 'string', default: '4' },
    samples: { type: 'string', default: '20' },
    'no-write': { type: 'boolean', default: false },
  },
});
const parts = new Set(args.parts.split(','));
// A URL without a user name: the OS user, as psql and keygate's store do.
if (pg.defaults.user === undefined || pg.defaults.user === '') pg.defaults.user = os.userInfo().username;
const tmp = mkdtempSync(path.join(os.tmpdir(), 'keygate-bench-fleet-'));
const children = new Set<ChildProcess>();
const databases = new Set<string>();
const log = (s: string): void => void process.stderr.write(`${s}\n`);

async function admin<T extends pg.QueryResultRow>(sql: string, values: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: PG_URL });
  c.on('error', () => undefined);
  await c.connect();
  try {
    return (await c.query<T>(sql, values)).rows;
  } finally {
    await c.end();
  }
}

async function newDatabase(): Promise<string> {
  const name = `kg_bench_${randomBytes(5).toString('hex')}`;
  await admin(`CREATE DATABASE "${name}"`);
  databases.add(name);
  const u = new URL(PG_URL);
  u.pathname = `/${name}`;
  return u.toString();
}

async function dropDatabase(url: string): Promise<void> {
  const name = new URL(url).pathname.slice(1);
  await admin('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [name]);
  await admin(`DROP DATABASE IF EXISTS "${name}"`);
  databases.delete(name);
}

async function cleanup(): Promise<void> {
  for (const c of children) c.kill('SIGKILL');
  for (const name of [...databases]) {
    const u = new URL(PG_URL);
    u.pathname = `/${name}`;
    await dropDatabase(u.toString()).catch(() => undefined);
  }
  rmSync(tmp, { recursive: true, force: true });
}
process.on('SIGINT', () => void cleanup().then(() => process.exit(130)));

const hex = (s: string): string => createHash('sha256').update(s).digest('hex');
const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};
const fmt = (x: number): string => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));

/** A config like bench/reconcile.ts's: custom groups with rules, literal keys and key_hash entries; `edited` changes 1% of the keys. */
function config(n: number, edited: boolean, extra = ''): string {
  const groups = ['analysts', 'writers', 'etl', 'monitoring', 'partners'];
  const out = ['version: 1', 'config:', ...(extra === '' ? [] : ['  keygate:', extra]), '  groups:'];
  for (const g of groups) out.push(`    - name: ${g}`, `      description: ${g} (bench)`, '      allow:', `        - methods: [GET, HEAD]`, `          paths: ["/api/${g}/**", "/api/card/**"]`);
  out.push('  api-keys:');
  const kinds = ['admin', 'all-users', ...groups];
  for (let i = 0; i < n; i++) {
    const e = edited && i % 100 === 50;
    const id = String(i).padStart(6, '0');
    out.push(`    - name: "service ${id}"`, `      group: ${kinds[i % kinds.length]}`);
    if (i % 2 === 0 || e) out.push(`      description: "Key of service ${id}${e ? ' (edited)' : ''}"`);
    if (i % 2 === 0) out.push(`      key: kg_${hex(`literal-${i}`).slice(0, 40)}`);
    else out.push(`      key_hash: "sha256:${hex(`hashed-${i}`)}"`);
  }
  return `${out.filter((l) => l !== '').join('\n')}\n`;
}

function load(file: string): DesiredState {
  const r = loadConfigFile(file, { env: {} });
  if (!r.ok) throw new Error(`${file}: invalid: ${JSON.stringify(r.errors.slice(0, 3))}`);
  return r.desired;
}

// ---------------------------------------------------------------------------
// Reconcile

type StoreKind = 'SQLite' | 'PostgreSQL';

async function location(kind: StoreKind): Promise<string> {
  return kind === 'SQLite' ? path.join(mkdtempSync(path.join(tmp, 'db-')), 'keygate.db') : newDatabase();
}

async function drop(kind: StoreKind, where: string): Promise<void> {
  if (kind === 'SQLite') rmSync(path.dirname(where), { recursive: true, force: true });
  else await dropDatabase(where);
}

/** open + reconcile + close, as `keygate apply` does once the file is loaded. */
async function applyOnce(where: string, desired: DesiredState): Promise<number> {
  const t0 = performance.now();
  const store = await openStore(where);
  try {
    await reconcile(store, desired, { apply: true });
  } finally {
    await store.close();
  }
  return performance.now() - t0;
}

async function snapshotOnce(where: string): Promise<number> {
  const store = await openStore(where);
  try {
    const t0 = performance.now();
    await store.snapshot();
    return performance.now() - t0;
  } finally {
    await store.close();
  }
}

async function benchReconcile(): Promise<string[]> {
  const rows: string[] = [];
  const reps = Number(args.reps);
  for (const n of args.sizes.split(',').map(Number)) {
    const file = path.join(tmp, `c-${n}.yml`);
    const editedFile = path.join(tmp, `c-${n}-edited.yml`);
    writeFileSync(file, config(n, false));
    writeFileSync(editedFile, config(n, true));
    const desired = load(file);
    const edited = load(editedFile);
    const r = n >= 100_000 ? Math.min(reps, 2) : reps;
    const samples: Record<StoreKind, Record<string, number[]>> = { SQLite: {}, PostgreSQL: {} };
    const add = (k: StoreKind, what: string, ms: number): void => void (samples[k][what] ??= []).push(ms);
    for (let i = 0; i < r; i++) {
      for (const kind of ['SQLite', 'PostgreSQL'] as const) {
        const where = await location(kind);
        add(kind, 'first apply (empty database)', await applyOnce(where, desired));
        add(kind, 'no-op re-apply (same file)', await applyOnce(where, desired));
        add(kind, 'apply of a 1% edit', await applyOnce(where, edited));
        add(kind, 'whole-table read (snapshot)', await snapshotOnce(where));
        await drop(kind, where);
        log(`  ${n} keys, ${kind}, rep ${i + 1}: ${Object.entries(samples[kind]).map(([w, s]) => `${w} ${fmt(s[s.length - 1] as number)} ms`).join(', ')}`);
      }
    }
    for (const what of Object.keys(samples.SQLite)) {
      const s = median(samples.SQLite[what] as number[]);
      const p = median(samples.PostgreSQL[what] as number[]);
      rows.push(`| ${n.toLocaleString('en')} | ${what} | ${fmt(s)} | ${fmt(p)} | ${(p / s).toFixed(1)}× | ${r} |`);
    }
  }
  return rows;
}

// ---------------------------------------------------------------------------
// Processes

function spawnChild(argv: string[], env: NodeJS.ProcessEnv = {}): { child: ChildProcess; err: () => string; out: () => string } {
  const [cmd, ...rest] = argv as [string, ...string[]];
  const child = spawn(cmd, rest, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  child.once('exit', () => children.delete(child));
  let out = '';
  let err = '';
  child.stdout?.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr?.on('data', (c: Buffer) => (err = (err + c.toString()).slice(-20_000)));
  return { child, out: () => out, err: () => err };
}

async function waitFor(what: string, fn: () => string | null, guardMs = 60_000): Promise<string> {
  const end = Date.now() + guardMs;
  for (;;) {
    const v = fn();
    if (v !== null) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const hasTaskset = spawnSync('taskset', ['-c', '0', 'true']).status === 0 && os.cpus().length >= 2;
const pin = (cpus: string, argv: string[]): string[] => (hasTaskset ? ['taskset', '-c', cpus, ...argv] : argv);

async function startUpstream(): Promise<number> {
  const u = spawnChild(pin('1', [process.execPath, '--import', 'tsx', path.join(ROOT, 'bench/proxy-servers/upstream.ts'), '0']));
  return Number(await waitFor('the upstream', () => /ready (\d+)/.exec(u.out())?.[1] ?? null));
}

interface Replica {
  proxy: string;
  admin: string;
  child: ChildProcess;
}

async function startKeygate(cfg: string, db: string, env: NodeJS.ProcessEnv = {}, cpus = '0'): Promise<Replica> {
  const k = spawnChild(pin(cpus, [process.execPath, BIN, 'serve', '-c', cfg, '--db', db, '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0']), env);
  const m = await waitFor('keygate serving', () => {
    const x = /"listen":"([^"]+)","admin_listen":"([^"]+)"/.exec(k.err());
    return x === null ? null : `${x[1]} ${x[2]}`;
  });
  const [p, a] = m.split(' ') as [string, string];
  // Its log (one line per request) goes nowhere from here on: as bench/proxy.ts does (to /dev/null).
  k.child.stderr?.removeAllListeners('data');
  k.child.stderr?.resume();
  return { proxy: `http://${p}`, admin: `http://${a}`, child: k.child };
}

function wrk(url: string, seconds: number, key: string): { rps: number; p99: string } {
  const [cmd, ...argv] = pin('1', ['wrk', '-t1', '-c32', `-d${seconds}s`, '--latency', '-H', `x-api-key: ${key}`, `${url}/api/card/1`]) as [string, ...string[]];
  const r = spawnSync(cmd, argv, { encoding: 'utf8' });
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(r.stdout)?.[1] ?? NaN);
  if (/Non-2xx/.test(r.stdout) || Number.isNaN(rps)) throw new Error(`wrk: ${r.stdout}${r.stderr}`);
  return { rps, p99: /99%\s+(\S+)/.exec(r.stdout)?.[1] ?? '?' };
}

async function benchProxy(): Promise<string[]> {
  const upstream = await startUpstream();
  const n = 3000;
  const cfg = path.join(tmp, 'proxy.yml');
  writeFileSync(cfg, config(n, false, `    upstream: http://127.0.0.1:${upstream}`));
  const key = `kg_${hex('literal-0').slice(0, 40)}`;
  const pgUrl = await newDatabase();
  const targets: Array<{ name: StoreKind; r: Replica }> = [];
  targets.push({ name: 'SQLite', r: await startKeygate(cfg, path.join(mkdtempSync(path.join(tmp, 'db-')), 'keygate.db')) });
  targets.push({ name: 'PostgreSQL', r: await startKeygate(cfg, pgUrl) });
  const seconds = Number(args.duration);
  const results: Record<StoreKind, Array<{ rps: number; p99: string }>> = { SQLite: [], PostgreSQL: [] };
  for (const t of targets) wrk(t.r.proxy, 1, key); // warm-up
  for (let round = 0; round < Number(args.rounds); round++) {
    const order = round % 2 === 0 ? targets : [...targets].reverse();
    for (const t of order) {
      const w = wrk(t.r.proxy, seconds, key);
      results[t.name].push(w);
      log(`  proxy round ${round + 1}, ${t.name}: ${w.rps.toFixed(0)} req/s, p99 ${w.p99}`);
    }
  }
  for (const t of targets) t.r.child.kill('SIGTERM');
  const s = median(results.SQLite.map((x) => x.rps));
  const p = median(results.PostgreSQL.map((x) => x.rps));
  return [
    `| SQLite | ${results.SQLite.map((x) => x.rps.toFixed(0)).join(', ')} | ${s.toFixed(0)} | ${results.SQLite.map((x) => x.p99).join(', ')} |`,
    `| PostgreSQL | ${results.PostgreSQL.map((x) => x.rps.toFixed(0)).join(', ')} | ${p.toFixed(0)} | ${results.PostgreSQL.map((x) => x.p99).join(', ')} |`,
    `| ratio | | ${(p / s).toFixed(3)} | |`,
  ];
}

// ---------------------------------------------------------------------------
// Propagation

const ADMIN_KEY = 'mb_benchFleetAdminKey0123456789ab';

async function status(url: string, key: string): Promise<number> {
  const res = await fetch(`${url}/api/card/1`, { headers: { 'x-api-key': key } });
  await res.arrayBuffer();
  return res.status;
}

async function benchPropagation(): Promise<string[]> {
  const upstream = await startUpstream();
  const cfg = path.join(tmp, 'fleet.yml');
  writeFileSync(
    cfg,
    `version: 1\nconfig:\n  keygate:\n    upstream: http://127.0.0.1:${upstream}\n  api-keys:\n    - name: Admin\n      group: admin\n      key: ${ADMIN_KEY}\n`,
  );
  const url = await newDatabase();
  const r1 = await startKeygate(cfg, url, {}, '0');
  const r2 = await startKeygate(cfg, url, {}, '0');
  const created: number[] = [];
  const deleted: number[] = [];
  const poll = async (key: string, want: number): Promise<number> => {
    const t0 = performance.now();
    while ((await status(r2.proxy, key)) !== want) {
      if (performance.now() - t0 > 30_000) throw new Error('replica 2 never caught up');
      await new Promise((r) => setTimeout(r, 5));
    }
    return performance.now() - t0;
  };
  for (let i = 0; i < Number(args.samples); i++) {
    const res = await fetch(`${r1.admin}/api/api-key`, {
      method: 'POST',
      headers: { 'x-api-key': ADMIN_KEY, 'content-type': 'application/json' },
      body: JSON.stringify({ name: `bench ${i}`, group_id: 1 }),
    });
    const row = (await res.json()) as { id: number; unmasked_key: string };
    created.push(await poll(row.unmasked_key, 200));
    await fetch(`${r1.admin}/api/api-key/${row.id}`, { method: 'DELETE', headers: { 'x-api-key': ADMIN_KEY } });
    deleted.push(await poll(row.unmasked_key, 401));
  }
  r1.child.kill('SIGTERM');
  r2.child.kill('SIGTERM');
  log(`  propagation: create median ${fmt(median(created))} ms, max ${fmt(Math.max(...created))} ms; delete median ${fmt(median(deleted))} ms, max ${fmt(Math.max(...deleted))} ms`);
  const row = (what: string, xs: number[]): string => `| ${what} | ${xs.length} | ${fmt(median(xs))} | ${fmt(Math.max(...xs))} |`;
  return [row('created on replica 1 → admitted by replica 2', created), row('deleted on replica 1 → refused by replica 2', deleted)];
}

// ---------------------------------------------------------------------------

try {
  const started = new Date().toISOString();
  const load = os.loadavg();
  const sections: string[] = [];
  if (parts.has('reconcile')) {
    log('reconcile:');
    sections.push(
      '### Reconcile: PostgreSQL beside SQLite',
      '',
      'open + reconcile + close in this process (the file loaded once beforehand), median ms; a fresh database per repetition, stores interleaved.',
      '',
      '| keys | what | SQLite | PostgreSQL | PG/SQLite | reps |',
      '|---:|---|---:|---:|---:|---:|',
      ...(await benchReconcile()),
      '',
    );
  }
  if (parts.has('proxy')) {
    log('proxy:');
    sections.push(
      '### Proxy throughput: keygate on SQLite and on PostgreSQL',
      '',
      `\`wrk -t1 -c32 -d${args.duration}s\` with a valid key, 3,000 keys, default logging, ${args.rounds} interleaved rounds${hasTaskset ? '; keygate on CPU 0, upstream and wrk on CPU 1' : ''}.`,
      '',
      '| store | req/s per round | median req/s | p99 per round |',
      '|---|---|---:|---|',
      ...(await benchProxy()),
      '',
    );
  }
  if (parts.has('propagation')) {
    log('propagation:');
    sections.push(
      '### Propagation between replicas',
      '',
      'Two replicas on one PostgreSQL database (both on CPU 0); replica 2 polled every 5 ms. ms from the management answer on replica 1.',
      '',
      '| change | samples | median ms | max ms |',
      '|---|---:|---:|---:|',
      ...(await benchPropagation()),
      '',
    );
  }
  const text = [
    '## Fleet (PostgreSQL store)',
    '',
    `\`node --import tsx bench/fleet.ts\` (${started}; ${os.cpus().length} × ${os.cpus()[0]?.model ?? '?'}, Node ${process.version}, ` +
      `PostgreSQL ${(await admin<{ v: string }>("SELECT current_setting('server_version') AS v"))[0]?.v ?? '?'} on the same machine over loopback). ` +
      `The machine is shared with other engineers' test runs (load average ${load.map((x) => x.toFixed(1)).join(', ')} when this run started, on ${os.cpus().length} cores): runs are short and noisy; read differences under ~15% as noise.`,
    '',
    ...sections,
  ].join('\n');
  process.stdout.write(`${text}\n`);
  if (!args['no-write']) updateResults(text);
} finally {
  await cleanup();
}
