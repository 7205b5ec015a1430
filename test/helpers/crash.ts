/**
 * Crash safety of `apply`: a child process applying a large file is SIGKILLed
 * at chosen moments; after each kill the database must open, pass its
 * integrity checks (SQLite's `PRAGMA integrity_check`; PostgreSQL's foreign
 * keys, checked again by hand), and hold exactly the old state or exactly the
 * new one. Shared by the fast suite (a few runs), the PostgreSQL suite, and
 * the soak suite (many runs, and the real CLI too).
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { TestContext } from 'node:test';
import Database from 'better-sqlite3';
import { loadConfigFile } from '../../src/config/load.ts';
import type { DesiredState } from '../../src/config/types.ts';
import { openStore } from '../../src/store/open.ts';
import { openSqliteStore } from '../../src/store/sqlite.ts';
import { BIN, REPO } from './cli.ts';
import { tempDir } from './tmp.ts';

const FIXTURE = fileURLToPath(new URL('../fixtures/apply-child.ts', import.meta.url));

export type Version = 'old' | 'new';

/**
 * The old and the new file differ everywhere a reconcile writes: a tenth of
 * the keys deleted and as many created, half the key material rotated, some
 * descriptions changed, one group deleted (its keys move) and one created,
 * rules changed.
 */
export function crashConfig(version: Version, n: number): string {
  const out: string[] = ['version: 1', 'config:', '  groups:'];
  const groups = version === 'old' ? [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] : [0, 1, 2, 3, 4, 5, 6, 7, 8, 10];
  for (const g of groups) {
    out.push(`    - name: g${g}`, `      description: group ${g} (${version})`, '      allow:', `        - paths: ["/api/g${g}/**"${version === 'new' && g % 2 === 0 ? ', "/api/shared/*"' : ''}]`);
  }
  out.push('  api-keys:');
  const first = version === 'old' ? 0 : Math.floor(n / 10);
  for (let i = first; i < first + n; i++) {
    let g = i % 10;
    if (version === 'new' && g === 9) g = 10;
    const rotated = version === 'new' && i % 2 === 0;
    const described = version === 'new' && i % 3 === 0 ? 'changed' : 'same';
    out.push(
      `    - name: key-${String(i).padStart(6, '0')}`,
      `      group: g${g}`,
      `      description: ${described} ${i}`,
      `      key: crash-${rotated ? 'new' : 'old'}-material-${i}-Q7fLx2Pz`,
    );
  }
  return `${out.join('\n')}\n`;
}

function fingerprint(lines: string[]): string {
  lines.sort();
  return createHash('sha256').update(lines.join('\n')).digest('hex');
}

const BUILTIN = new Set(['admin', 'all-users']);

function desiredFingerprint(d: DesiredState): { keys: string; groups: string } {
  return {
    keys: fingerprint(d.keys.map((k) => `${k.name}\t${k.digest}\t${k.group}\t${k.description ?? ''}`)),
    groups: fingerprint(d.groups.filter((g) => !BUILTIN.has(g.name)).map((g) => `${g.name}\t${g.description ?? ''}\t${g.allow === null ? '' : JSON.stringify(g.allow)}`)),
  };
}

export interface DbCheck {
  integrity: string;
  keys: string;
  groups: string;
  keyCount: number;
  revisions: number;
  lastSha: string | null;
}

/** The database a crash series applies to: where it is (as `--db` takes it), and how to check it. */
export interface CrashTarget {
  location: string;
  /** Checks the database as a fresh process would find it, and reads its state. */
  inspect(): Promise<DbCheck>;
}

/** A SQLite file: integrity_check and foreign_key_check, then keygate's own open (migrations, pragmas). */
export function sqliteTarget(dbFile: string): CrashTarget {
  return {
    location: dbFile,
    inspect: async () => {
      const c = inspectDatabase(dbFile);
      await openSqliteStore(dbFile).close();
      return c;
    },
  };
}

/** Queries on a PostgreSQL database, as a test's admin user. */
export type SqlQuery = <R extends Record<string, unknown>>(sql: string, values?: unknown[]) => Promise<R[]>;

/** A PostgreSQL database: no key without its group, then keygate's own open (migrations) on what is left. */
export function postgresTarget(url: string, query: SqlQuery): CrashTarget {
  return {
    location: url,
    inspect: async () => {
      const [orphans] = await query<{ n: number }>('SELECT count(*)::int AS n FROM keygate.api_keys k WHERE NOT EXISTS (SELECT 1 FROM keygate.groups g WHERE g.id = k.group_id)');
      assert.equal(orphans?.n, 0, 'keys whose group does not exist');
      const rows = await query<{ name: string; digest: string; grp: string; description: string | null }>(
        'SELECT k.name, k.digest, g.name AS grp, k.description FROM keygate.api_keys k JOIN keygate.groups g ON g.id = k.group_id',
      );
      const groups = await query<{ name: string; description: string | null; allow: string | null }>('SELECT name, description, allow FROM keygate.groups WHERE NOT builtin');
      const [rev] = await query<{ n: number; last: number | null }>('SELECT count(*)::int AS n, max(number)::int AS last FROM keygate.revisions');
      const [sha] = await query<{ config_sha256: string }>('SELECT config_sha256 FROM keygate.revisions ORDER BY number DESC LIMIT 1');
      await (await openStore(url)).close();
      return {
        integrity: 'ok',
        keys: fingerprint(rows.map((r) => `${r.name}\t${r.digest}\t${r.grp}\t${r.description ?? ''}`)),
        groups: fingerprint(groups.map((g) => `${g.name}\t${g.description ?? ''}\t${g.allow ?? ''}`)),
        keyCount: rows.length,
        revisions: rev?.n ?? 0,
        lastSha: sha?.config_sha256 ?? null,
      };
    },
  };
}

/** Opens the database as a fresh process would (recovering the WAL), checks it and reads its state. */
export function inspectDatabase(dbFile: string): DbCheck {
  const db = new Database(dbFile, { fileMustExist: true });
  try {
    const integrity = (db.pragma('integrity_check') as Array<{ integrity_check: string }>).map((r) => r.integrity_check).join('; ');
    const fk = db.pragma('foreign_key_check') as unknown[];
    assert.equal(fk.length, 0, `foreign_key_check found ${fk.length} problems`);
    const rows = db
      .prepare('SELECT k.name, k.digest, g.name AS grp, k.description FROM api_keys k JOIN groups g ON g.id = k.group_id')
      .all() as Array<{ name: string; digest: string; grp: string; description: string | null }>;
    const keyCount = db.prepare('SELECT count(*) FROM api_keys').pluck().get() as number;
    const groups = db.prepare('SELECT name, description, allow FROM groups WHERE builtin = 0').all() as Array<{ name: string; description: string | null; allow: string | null }>;
    const rev = db.prepare('SELECT count(*) AS n, max(number) AS last FROM revisions').get() as { n: number; last: number | null };
    const lastSha = rev.last === null ? null : (db.prepare('SELECT config_sha256 FROM revisions WHERE number = ?').pluck().get(rev.last) as string);
    return {
      integrity,
      keys: fingerprint(rows.map((r) => `${r.name}\t${r.digest}\t${r.grp}\t${r.description ?? ''}`)),
      groups: fingerprint(groups.map((g) => `${g.name}\t${g.description ?? ''}\t${g.allow ?? ''}`)),
      keyCount,
      revisions: rev.n,
      lastSha,
    };
  } finally {
    db.close();
  }
}

interface Warm {
  child: ChildProcess;
  ready: Promise<void>;
  /** Resolves with the child's own apply time when it finished before being killed, else null. */
  done: Promise<number | null>;
  exited: Promise<void>;
  /** Set when the child exited on its own with an error (not by our SIGKILL). */
  failure: () => string | null;
}

function spawnApplier(desiredJson: string, dbFile: string, children: Set<ChildProcess>): Warm {
  const child = spawn(process.execPath, ['--import', 'tsx', FIXTURE, desiredJson, dbFile], { cwd: REPO, stdio: ['pipe', 'pipe', 'pipe'] });
  children.add(child);
  let out = '';
  let err = '';
  let readyResolve!: () => void;
  let doneResolve!: (ms: number | null) => void;
  const ready = new Promise<void>((r) => (readyResolve = r));
  const done = new Promise<number | null>((r) => (doneResolve = r));
  child.stdout?.on('data', (c: Buffer) => {
    out += c.toString();
    if (out.includes('ready\n')) readyResolve();
    const m = /done ([\d.]+)/.exec(out);
    if (m !== null) doneResolve(Number(m[1]));
  });
  child.stderr?.on('data', (c: Buffer) => (err += c.toString()));
  child.stdin?.on('error', () => undefined);
  let failure: string | null = null;
  const exited = new Promise<void>((resolve) =>
    child.once('exit', (code, signal) => {
      children.delete(child);
      if (signal === null && code !== 0) failure = `apply child exited with ${String(code)}: ${err}`;
      doneResolve(null);
      readyResolve();
      resolve();
    }),
  );
  return { child, ready, done, exited, failure: () => failure };
}

export interface CrashSummary {
  runs: number;
  /** Runs after which the database held the state it had before the run. */
  old: number;
  /** Runs after which it held the state the run was applying. */
  new: number;
  /** Runs killed before the child reported that it had finished. */
  killedMidway: number;
  estimateMs: number;
  cliRuns: number;
}

export interface CrashOptions {
  keys: number;
  /** Runs of the apply engine in a fixture child (warm, killed at stratified random moments). */
  runs: number;
  /** Runs of the real CLI, `node bin/keygate.js apply` (cold start, killed at random moments). */
  cliRuns?: number;
  log?: (line: string) => void;
  /** The database (default: a SQLite file in a temp folder). */
  target?: CrashTarget;
}

/** Stratified random moments in [0, span): one per slice, shuffled, so the whole window is covered. */
function stratified(n: number, span: number): number[] {
  const out = Array.from({ length: n }, (_, i) => ((i + Math.random()) / n) * span);
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [out[i], out[j]] = [out[j] as number, out[i] as number];
  }
  return out;
}

export async function crashSeries(t: TestContext, opts: CrashOptions): Promise<CrashSummary> {
  const log = opts.log ?? (() => undefined);
  const tmp = tempDir(t);
  const files: Record<Version, string> = { old: tmp.write('old.yml', crashConfig('old', opts.keys)), new: tmp.write('new.yml', crashConfig('new', opts.keys)) };
  const desired = {} as Record<Version, DesiredState>;
  const json = {} as Record<Version, string>;
  const expected = {} as Record<Version, { keys: string; groups: string }>;
  for (const v of ['old', 'new'] as const) {
    const r = loadConfigFile(files[v], { env: {} });
    assert.ok(r.ok, `${v} config is valid`);
    desired[v] = r.desired;
    json[v] = tmp.path(`${v}.json`);
    writeFileSync(json[v], JSON.stringify(r.desired));
    expected[v] = desiredFingerprint(r.desired);
  }
  assert.notEqual(expected.old.keys, expected.new.keys);
  const targetDb = opts.target ?? sqliteTarget(tmp.path('keygate.db'));
  const dbFile = targetDb.location;
  const children = new Set<ChildProcess>();
  t.after(() => {
    for (const c of children) c.kill('SIGKILL');
  });

  let last: DbCheck | null = null;
  const check = async (label: string, before: DbCheck | null, target: Version, from: Version): Promise<Version> => {
    // keygate's own open (migrations, pragmas) works on what the crash left.
    const c = await targetDb.inspect();
    last = c;
    assert.equal(c.integrity, 'ok', `${label}: integrity_check`);
    const matches = (['old', 'new'] as const).filter((v) => c.keys === expected[v].keys && c.groups === expected[v].groups);
    assert.equal(
      matches.length,
      1,
      `${label}: the database holds neither the whole old state nor the whole new one (${c.keyCount} keys, ${c.revisions} revisions)`,
    );
    const state = matches[0] as Version;
    if (before !== null) {
      // A revision is recorded exactly when the change landed.
      assert.equal(c.revisions, before.revisions + (state === target && state !== from ? 1 : 0), `${label}: revisions`);
      assert.equal(c.lastSha, desired[state].sha256, `${label}: the last revision names the file whose state is in the database`);
    }
    return state;
  };

  // Set-up and calibration: old from nothing, then old → new to completion, measuring the time.
  // Children wait, loaded, two per target: one is ready by the time it is needed, and
  // replacements start while the database is being checked, not while another applies.
  const warm: Record<Version, Warm[]> = { old: [], new: [] };
  const refill = (): void => {
    for (const v of ['old', 'new'] as const) while (warm[v].length < 2) warm[v].push(spawnApplier(json[v], dbFile, children));
  };
  const take = (v: Version): Warm => warm[v].shift() ?? spawnApplier(json[v], dbFile, children);
  const runToEnd = async (v: Version): Promise<number> => {
    const w = take(v);
    refill();
    await w.ready;
    w.child.stdin?.write('go\n');
    const ms = await w.done;
    await w.exited;
    assert.equal(w.failure(), null);
    assert.ok(ms !== null, `calibration apply of ${v} did not finish`);
    return ms;
  };
  await runToEnd('old');
  let state = await check('set-up', null, 'old', 'old');
  assert.equal(state, 'old');
  let before = last as DbCheck | null;
  const estimateMs = await runToEnd('new');
  state = await check('calibration', before, 'new', 'old');
  assert.equal(state, 'new');
  log(`apply of ${opts.keys} keys (old → new) took ${estimateMs.toFixed(0)} ms; killing at moments spread over ${(estimateMs * 1.15).toFixed(0)} ms`);

  const summary: CrashSummary = { runs: 0, old: 0, new: 0, killedMidway: 0, estimateMs, cliRuns: 0 };
  // Kill moments: stratified fractions of a window that follows the apply's duration as it
  // drifts (load, caches): 1.15 × the estimate, so most kills land mid-way and some after the commit.
  const fractions = stratified(opts.runs, 1.15);
  let estimate = estimateMs;
  for (let i = 0; i < opts.runs; i++) {
    const target: Version = state === 'old' ? 'new' : 'old';
    const w = take(target);
    const waitStart = performance.now();
    await w.ready;
    const waited = performance.now() - waitStart;
    before = last as DbCheck | null;
    const delay = (fractions[i] as number) * estimate;
    let finished = false;
    void w.done.then((ms) => (finished = ms !== null));
    w.child.stdin?.write('go\n');
    await new Promise((r) => setTimeout(r, delay));
    const killedMidway = !finished && w.child.exitCode === null;
    w.child.kill('SIGKILL');
    await w.exited;
    assert.equal(w.failure(), null);
    const doneMs = await w.done;
    refill();
    const from: Version = state;
    const checkStart = performance.now();
    state = await check(`run ${i + 1} (${from} → ${target}, killed after ${delay.toFixed(0)} ms)`, before, target, from);
    if (doneMs !== null) estimate = (estimate + doneMs) / 2;
    else if (state === from && delay > 0.8 * estimate) estimate *= 1.25;
    summary.runs++;
    if (state === from) summary.old++;
    else summary.new++;
    if (killedMidway) summary.killedMidway++;
    log(`run ${i + 1}: ${from} → ${target}, SIGKILL after ${delay.toFixed(0)} ms${killedMidway ? '' : ' (had finished)'}: database holds the ${state === from ? 'old' : 'new'} state, integrity ok (waited ${waited.toFixed(0)} ms for a warm child, checked in ${(performance.now() - checkStart).toFixed(0)} ms)`);
  }
  for (const w of [...warm.old, ...warm.new]) w.child.kill('SIGKILL');

  // The real CLI, cold: node bin/keygate.js apply, killed anywhere from start-up to exit.
  const cliRuns = opts.cliRuns ?? 0;
  if (cliRuns > 0) {
    const cli = (v: Version): { child: ChildProcess; exited: Promise<number | null> } => {
      const child = spawn(process.execPath, [BIN, 'apply', '-c', files[v], '--db', dbFile, '--allow-deletes'], { cwd: REPO, stdio: 'ignore' });
      children.add(child);
      return { child, exited: new Promise((resolve) => child.once('exit', (code) => (children.delete(child), resolve(code)))) };
    };
    const target0: Version = state === 'old' ? 'new' : 'old';
    const startedAt = performance.now();
    before = last as DbCheck | null;
    const full = cli(target0);
    assert.equal(await full.exited, 0, 'a full CLI apply');
    const cliMs = performance.now() - startedAt;
    state = await check('CLI calibration', before, target0, state);
    log(`keygate apply (CLI, cold) took ${cliMs.toFixed(0)} ms`);
    const cliDelays = stratified(cliRuns, cliMs * 1.1);
    for (let i = 0; i < cliRuns; i++) {
      const target: Version = state === 'old' ? 'new' : 'old';
      before = last as DbCheck | null;
      const run = cli(target);
      const delay = cliDelays[i] as number;
      await new Promise((r) => setTimeout(r, delay));
      const midway = run.child.exitCode === null;
      run.child.kill('SIGKILL');
      await run.exited;
      const from: Version = state;
      state = await check(`CLI run ${i + 1} (${from} → ${target}, killed after ${delay.toFixed(0)} ms)`, before, target, from);
      summary.cliRuns++;
      log(`CLI run ${i + 1}: ${from} → ${target}, SIGKILL after ${delay.toFixed(0)} ms${midway ? '' : ' (had exited)'}: ${state === from ? 'old' : 'new'} state`);
    }
  }
  return summary;
}
