/**
 * Hostile input, part 2: config files mutated at random (property-based, with
 * fast-check) never crash the loader, never apply partially, and always point
 * their errors at a line and column ≥ 1. YAML alias bombs are refused quickly.
 *
 * A failing property prints fast-check's seed and the shrunk mutation list;
 * re-run one with FC_SEED=<seed>.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import fc from 'fast-check';
import { loadConfigBytes, type LoadResult } from '../src/config/load.ts';
import Database from 'better-sqlite3';
import { reconcileFile } from '../src/control/reconcile-file.ts';
import { formatDiagnostic, type Diagnostic } from '../src/errors.ts';
import { reconcile } from '../src/reconcile/engine.ts';
import { openSqliteStore, type SqliteStore } from '../src/store/sqlite.ts';
import { runCli } from './helpers/cli.ts';
import { billionLaughs } from './helpers/config.ts';
import { tempDir } from './helpers/tmp.ts';

const ENV_SECRET = 'env_S3cret_Value_from_the_environment_7Yq';
const ENV = { CI_BOT_KEY: ENV_SECRET };
const HASHED = 'kg_fuzz_hashed_key_0123456789abcdef';

const BASE = `# yaml-language-server: $schema=./schemas/config.schema.json
version: 1
config:
  keygate:
    upstream: http://127.0.0.1:3000
    failed_auth_per_minute: 60
  users:
    - email: cam@example.com
      first_name: Cam
  settings:
    site-name: Fuzz
  groups:
    - name: analysts
      description: Read-only access
      allow:
        - methods: [GET, HEAD]
          paths: ["/api/card/**", "/api/dashboard/*"]
    - name: writers
  api-keys:
    - name: Admin API key
      group: admin
      description: "API key with admin permissions."
      creator: cam@example.com
      key: mb_fuzzAdminKey0123456789
    - name: CI bot
      group: analysts
      key: "{{env CI_BOT_KEY}}"
      allow:
        - paths: ["/api/card/1"]
    - name: Reporting
      group: writers
      key_hash: "sha256:${createHash('sha256').update(HASHED).digest('hex')}"
      expires_at: 2099-06-30T00:00:00Z
      disabled: false
`;

const FILE = '/keygate-fuzz/config.yml';
const SHOWN = 'config.yml';

const loadBytes = (bytes: Buffer): LoadResult => loadConfigBytes(bytes, FILE, { env: ENV, displayName: SHOWN });

// ---------------------------------------------------------------------------
// Mutations of a valid file.

type Mutation = { name: string; apply: (b: Buffer) => Buffer };

const lines = (b: Buffer): string[] => b.toString('latin1').split('\n');
const unlines = (ls: string[]): Buffer => Buffer.from(ls.join('\n'), 'latin1');
const at = (b: Buffer, frac: number): number => Math.floor(frac * (b.length + 1));
const frac = fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true });

/** Replaces the value of the `pick`-th "key: value" line. */
function replaceValue(b: Buffer, pick: number, value: string): Buffer {
  const ls = lines(b);
  const scalarLines = ls.map((l, i) => [l, i] as const).filter(([l]) => /^\s*(- )?[A-Za-z_-]+:( |$)/.test(l));
  if (scalarLines.length === 0) return b;
  const [l, i] = scalarLines[Math.floor(pick * scalarLines.length)] as readonly [string, number];
  ls[i] = l.replace(/^(\s*(- )?[A-Za-z_-]+:).*$/, `$1 ${value}`);
  return unlines(ls);
}

const WRONG_TYPES = [
  '[]', '{}', '[1, 2]', '{a: 1}', '42', '-1', '0', '3.5e300', '1e400', '.nan', '.inf', '0x1F', '0o17', 'true', 'false', 'null', '~', '""', "''",
  '!!binary aGVsbG8=', '!!str 12', '!!int "7"', '!!float x', '!!set {a, b}', '!!omap [a: 1]', '!!js/function "function(){}"', '!custom tag',
  '2001-01-01', '2001-12-14t21:59:43.10-05:00', '|\n  block', '>-\n  folded', '"\\u0000"', '"\\x7f\\ud800"', '"\\uffff"', '&a x', '*nope', '? complex',
  '[[[[[]]]]]', '{{env CI_BOT_KEY}}', '"{{env MISSING_VAR}}"', '"{{env}}"', '"{{ env  CI_BOT_KEY }}"', '"{{env CI_BOT_KEY"', '"{{env CI_BOT_KEY}}{{env CI_BOT_KEY}}"',
  '__proto__', '{__proto__: {admin: true}}', '{constructor: {prototype: 1}}',
];

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  frac.map((f) => ({ name: `truncate at ${f.toFixed(4)}`, apply: (b: Buffer) => b.subarray(0, at(b, f)) })),
  fc.tuple(frac, fc.constantFrom(...WRONG_TYPES)).map(([f, v]) => ({ name: `wrong type ${JSON.stringify(v)} at ${f.toFixed(3)}`, apply: (b: Buffer) => replaceValue(b, f, v) })),
  fc.tuple(frac, fc.integer({ min: 1, max: 5000 }), fc.boolean()).map(([f, d, map]) => ({
    name: `nesting depth ${d} (${map ? 'maps' : 'lists'})`,
    apply: (b: Buffer) => replaceValue(b, f, map ? `${'{a: '.repeat(d)}1${'}'.repeat(d)}` : `${'['.repeat(d)}${']'.repeat(d)}`),
  })),
  fc.tuple(frac, fc.integer({ min: 1, max: 400 })).map(([f, d]) => ({
    name: `block nesting depth ${d}`,
    apply: (b: Buffer) => {
      const ls = lines(b);
      const i = Math.floor(f * ls.length);
      const nest = Array.from({ length: d }, (_, k) => `${' '.repeat(k * 2)}n${k}:`).join('\n');
      ls.splice(i, 0, nest);
      return unlines(ls);
    },
  })),
  fc.tuple(frac, fc.constantFrom(255, 256, 5_000, 200_000, 1_000_000), fc.constantFrom('x', 'é', '🔑', ' ', '\\u0000')).map(([f, n, c]) => ({
    name: `huge string ${n} × ${JSON.stringify(c)}`,
    apply: (b: Buffer) => replaceValue(b, f, `"${c.repeat(n)}"`),
  })),
  frac.map((f) => ({
    name: `duplicate line at ${f.toFixed(3)}`,
    apply: (b: Buffer) => {
      const ls = lines(b);
      const i = Math.floor(f * ls.length);
      ls.splice(i, 0, ls[i] ?? '');
      return unlines(ls);
    },
  })),
  fc.constantFrom('top', 'settings', 'keygate', 'groups').chain((where) =>
    fc.integer({ min: 2, max: 12 }).map((width) => ({
      name: `alias bomb (${where}, width ${width})`,
      apply: (b: Buffer) => {
        const bomb = billionLaughs(9, width);
        const text = b.toString('latin1');
        if (where === 'top') return Buffer.from(`${bomb}\n${text}`, 'latin1');
        const indent = (s: string, n: number): string => s.split('\n').map((l) => ' '.repeat(n) + l).join('\n');
        if (where === 'settings') return Buffer.from(text.replace('  settings:\n', `  settings:\n${indent(bomb, 4)}\n`), 'latin1');
        if (where === 'keygate') return Buffer.from(text.replace('  keygate:\n', `  keygate:\n${indent(bomb, 4)}\n`), 'latin1');
        return Buffer.from(text.replace('    - name: writers\n', `    - name: writers\n      description:\n${indent(bomb, 8)}\n`), 'latin1');
      },
    })),
  ),
  fc.tuple(frac, frac).map(([f, g]) => ({
    name: `anchor and alias at ${f.toFixed(3)}/${g.toFixed(3)}`,
    apply: (b: Buffer) => {
      const ls = lines(b);
      const i = Math.floor(f * ls.length);
      const j = Math.floor(g * ls.length);
      ls[i] = (ls[i] ?? '').replace(/: /, ': &anc ');
      ls[j] = (ls[j] ?? '').replace(/: .*$/, ': *anc');
      return unlines(ls);
    },
  })),
  fc.tuple(frac, fc.uint8Array({ minLength: 1, maxLength: 4 }).map((a) => Buffer.from(a.map((x) => 0x80 | x)))).map(([f, bytes]) => ({
    name: `invalid UTF-8 ${bytes.toString('hex')} at ${f.toFixed(3)}`,
    apply: (b: Buffer) => Buffer.concat([b.subarray(0, at(b, f)), bytes, b.subarray(at(b, f))]),
  })),
  fc.tuple(frac, fc.boolean()).map(([f, start]) => ({
    name: start ? 'BOM at the start' : `BOM at ${f.toFixed(3)}`,
    apply: (b: Buffer) => {
      const bom = Buffer.from([0xef, 0xbb, 0xbf]);
      return start ? Buffer.concat([bom, b]) : Buffer.concat([b.subarray(0, at(b, f)), bom, b.subarray(at(b, f))]);
    },
  })),
  fc.tuple(frac, fc.boolean()).map(([f, indent]) => ({
    name: `tab ${indent ? 'as indentation' : 'inserted'} at ${f.toFixed(3)}`,
    apply: (b: Buffer) => {
      if (!indent) return Buffer.concat([b.subarray(0, at(b, f)), Buffer.from('\t'), b.subarray(at(b, f))]);
      const ls = lines(b);
      const i = Math.floor(f * ls.length);
      ls[i] = (ls[i] ?? '').replace(/^ {2}/, '\t');
      return unlines(ls);
    },
  })),
  fc.tuple(frac, fc.constantFrom(':', '-', "'", '"', '{', '}', '[', ']', '&', '*', '!', '|', '>', '#', '%', '@', '`', '\n', ' ', '\r', '\0', ',', '?', '\\', '---\n', '...\n', '%YAML 1.1\n', '<<: ', '{{', '}}')).map(([f, s]) => ({
    name: `insert ${JSON.stringify(s)} at ${f.toFixed(3)}`,
    apply: (b: Buffer) => Buffer.concat([b.subarray(0, at(b, f)), Buffer.from(s), b.subarray(at(b, f))]),
  })),
  fc.tuple(frac, fc.integer({ min: 1, max: 40 })).map(([f, n]) => ({
    name: `delete ${n} bytes at ${f.toFixed(3)}`,
    apply: (b: Buffer) => Buffer.concat([b.subarray(0, at(b, f)), b.subarray(at(b, f) + n)]),
  })),
  fc.tuple(frac, frac).map(([f, g]) => ({
    name: `swap lines ${f.toFixed(3)}/${g.toFixed(3)}`,
    apply: (b: Buffer) => {
      const ls = lines(b);
      const i = Math.floor(f * ls.length);
      const j = Math.floor(g * ls.length);
      [ls[i], ls[j]] = [ls[j] ?? '', ls[i] ?? ''];
      return unlines(ls);
    },
  })),
  fc.constantFrom('crlf', 'cr').map((kind) => ({
    name: `line endings ${kind}`,
    apply: (b: Buffer) => Buffer.from(b.toString('latin1').replace(/\n/g, kind === 'crlf' ? '\r\n' : '\r'), 'latin1'),
  })),
  fc.tuple(frac, fc.constantFrom('__proto__', 'constructor', 'prototype', 'hasOwnProperty', 'toString', '<<')).map(([f, k]) => ({
    name: `key ${k} at ${f.toFixed(3)}`,
    apply: (b: Buffer) => {
      const ls = lines(b);
      const i = Math.floor(f * ls.length);
      const indent = /^\s*/.exec(ls[i] ?? '')?.[0].replace('-', ' ') ?? '';
      ls.splice(i + 1, 0, `${indent}${k}: {admin: true, group: admin}`);
      return unlines(ls);
    },
  })),
);

const mutated = fc.array(mutation, { minLength: 1, maxLength: 4 }).map((ms) => {
  let b: Buffer = Buffer.from(BASE, 'utf8');
  for (const m of ms) b = m.apply(b);
  return { names: ms.map((m) => m.name), bytes: b };
});

const seedParams = (): { seed?: number } => (process.env.FC_SEED !== undefined ? { seed: Number(process.env.FC_SEED) } : {});

function checkDiagnostic(d: Diagnostic, kind: string): void {
  assert.ok(Number.isInteger(d.line) && d.line >= 1, `${kind} line ${d.line}: ${formatDiagnostic(d)}`);
  assert.ok(Number.isInteger(d.column) && d.column >= 1, `${kind} column ${d.column}: ${formatDiagnostic(d)}`);
  assert.equal(d.file, SHOWN);
  assert.equal(typeof d.code, 'string');
  assert.ok(typeof d.message === 'string' && d.message.length > 0, `${kind} without a message`);
  assert.ok(!formatDiagnostic(d).includes(ENV_SECRET), `${kind} shows the value of an {{env}} template: ${formatDiagnostic(d).slice(0, 200)}`);
}

// ---------------------------------------------------------------------------

test('the unmutated file is valid (so that mutations start from a good file)', () => {
  const r = loadBytes(Buffer.from(BASE));
  assert.ok(r.ok, r.ok ? '' : r.errors.map(formatDiagnostic).join('\n'));
  assert.equal(r.desired.keys.length, 3);
});

test('mutated files never crash the loader, and every error points at a line and column ≥ 1', (t) => {
  const codes = new Map<string, number>();
  const slowest: Array<{ ms: number; what: string }> = [];
  let valid = 0;
  fc.assert(
    fc.property(mutated, ({ names, bytes }) => {
      const started = performance.now();
      let r: LoadResult;
      try {
        r = loadBytes(bytes);
      } catch (err) {
        assert.fail(`loadConfigBytes threw: ${String((err as Error).stack ?? err).slice(0, 500)}`);
      }
      const ms = performance.now() - started;
      slowest.push({ ms, what: `${names.join(' + ')} (${bytes.length} bytes)` });
      slowest.sort((a, b) => b.ms - a.ms).splice(3);
      assert.equal(typeof r.ok, 'boolean');
      if (!r.ok) assert.ok(r.errors.length >= 1, 'invalid without an error');
      if (r.ok) valid++;
      for (const d of r.ok ? [] : r.errors) codes.set(d.code, (codes.get(d.code) ?? 0) + 1);
      for (const d of r.ok ? [] : r.errors) checkDiagnostic(d, 'error');
      for (const d of r.warnings) checkDiagnostic(d, 'warning');
    }),
    { numRuns: 200, ...seedParams() },
  );
  const top = [...codes.entries()].sort((a, b) => b[1] - a[1]).slice(0, 12).map(([c, n]) => `${c} ${n}`);
  t.diagnostic(`200 mutated files: ${valid} still valid; ${codes.size} distinct error codes, most often: ${top.join(', ')}`);
  t.diagnostic(`slowest: ${slowest.map((x) => `${x.ms.toFixed(0)} ms ${x.what}`).join('; ')}`);
});

type Snapshot = Record<string, unknown[]>;

type DB = Database.Database;

/** keygate's store on a fresh database file, and a plain connection to look at its rows. */
function openBoth(file: string): { store: SqliteStore; db: DB; close: () => Promise<void> } {
  const store = openSqliteStore(file);
  const db = new Database(file);
  return {
    store,
    db,
    close: async () => {
      db.close();
      await store.close();
    },
  };
}

function snapshot(db: DB): Snapshot {
  return {
    groups: db.prepare('SELECT * FROM groups ORDER BY id').all(),
    api_keys: db.prepare('SELECT * FROM api_keys ORDER BY id').all(),
    revisions: db.prepare('SELECT * FROM revisions ORDER BY number').all(),
  };
}

test('a mutated file is applied whole or not at all: an invalid one changes nothing', async (t) => {
  const tmp = tempDir(t);
  const file = tmp.path('config.yml');
  const base = loadBytes(Buffer.from(BASE));
  assert.ok(base.ok);
  let invalid = 0;
  let applied = 0;
  let run = 0;
  await fc.assert(
    fc.asyncProperty(mutated, async ({ bytes }) => {
      const { store, db, close } = openBoth(tmp.path(`run-${run++}.db`));
      try {
        await reconcile(store, base.desired, { apply: true });
        // An api-owned key beside the config's, which no reconcile may touch.
        db.prepare(
          `INSERT INTO api_keys (id, name, digest, prefix, group_id, source, created_at, updated_at) VALUES (777777, 'api key', ?, 'kg_api_', 1, 'api', 'x', 'x')`,
        ).run(createHash('sha256').update('kg_api_owned_key_0123456789').digest('hex'));
        const before = snapshot(db);
        writeFileSync(file, bytes);
        const { outcome } = await reconcileFile(store, { file, skipIfSha256: null, env: ENV });
        const after = snapshot(db);
        if (outcome.kind !== 'applied') {
          invalid++;
          assert.deepEqual(after, before, `a ${outcome.kind} reload changed the database`);
          return;
        }
        applied++;
        // Applied: the keys in the database are exactly the file's (plus the api-owned one).
        const loaded = loadBytes(bytes);
        assert.ok(loaded.ok);
        const want = loaded.desired.keys.map((k) => `${k.name}\t${k.digest}`).sort();
        const got = (db.prepare(`SELECT name, digest FROM api_keys WHERE source = 'config'`).all() as Array<{ name: string; digest: string }>)
          .map((k) => `${k.name}\t${k.digest}`)
          .sort();
        assert.deepEqual(got, want);
        assert.equal(db.prepare(`SELECT count(*) FROM api_keys WHERE id = 777777`).pluck().get(), 1);
        assert.ok((after.revisions?.length ?? 0) - (before.revisions?.length ?? 0) <= 1);
      } finally {
        await close();
      }
    }),
    { numRuns: 100, ...seedParams() },
  );
  t.diagnostic(`100 mutated files: ${invalid} refused with the database unchanged, ${applied} applied whole`);
});

test('a change that fails inside the transaction leaves the database exactly as it was', async (t) => {
  const tmp = tempDir(t);
  const { store, db, close } = openBoth(tmp.path('keygate.db'));
  t.after(close);
  const base = loadBytes(Buffer.from(BASE));
  assert.ok(base.ok);
  await reconcile(store, base.desired, { apply: true });
  // An api-owned key holds the digest that the file's new entry wants: the UNIQUE
  // constraint fails half-way through the writes, after groups and other keys were written.
  const clash = 'kg_clashing_key_material_0123456789';
  db.prepare(
    `INSERT INTO api_keys (id, name, digest, prefix, group_id, source, created_at, updated_at) VALUES (888888, 'api clash', ?, 'kg_clas', 1, 'api', 'x', 'x')`,
  ).run(createHash('sha256').update(clash).digest('hex'));
  const before = snapshot(db);
  const changed = BASE.replace('    - name: writers\n', '    - name: writers\n    - name: brand-new-group\n').replace(
    '      key: mb_fuzzAdminKey0123456789\n',
    `      key: mb_fuzzAdminKeyRotated0123\n    - name: New entry\n      group: brand-new-group\n      key: ${clash}\n`,
  );
  const file = tmp.write('config.yml', changed);
  const { outcome } = await reconcileFile(store, { file, skipIfSha256: null, env: ENV });
  assert.equal(outcome.kind, 'failed');
  assert.deepEqual(snapshot(db), before, 'a failed apply left part of its writes behind');
  assert.ok(!JSON.stringify(outcome).includes(clash), 'the failure names the clashing key material');
});

// How long the refusals below take is measured in bench/alias-bombs.ts, not here.
test('YAML alias bombs ("billion laughs") are refused with a clear error, without expanding them', () => {
  const text = BASE;
  const bombs: Array<[string, string]> = [
    ['at the top level', `${billionLaughs(9, 9)}\n${text}`],
    ["in Metabase's settings section", text.replace('  settings:\n', `  settings:\n${billionLaughs(9, 9).replace(/^/gm, '    ')}\n`)],
    ['in a keygate section', text.replace('  keygate:\n', `  keygate:\n${billionLaughs(9, 9).replace(/^/gm, '    ')}\n`)],
    ['of maps', `${['a: &a {x: 1, y: 2, z: 3}', ...Array.from({ length: 9 }, (_, i) => `${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} {${Array.from({ length: 10 }, (_, k) => `k${k}: *${String.fromCharCode(97 + i)}`).join(', ')}}`)].join('\n')}\n${text}`],
    ['wide rather than deep (20,000 aliases of one list)', `big: &big [1, 2, 3]\nwide: [${Array(20_000).fill('*big').join(', ')}]\n${text}`],
  ];
  for (const [label, bomb] of bombs) {
    const r = loadBytes(Buffer.from(bomb));
    assert.ok(!r.ok, `${label}: the bomb was accepted`);
    const e = r.errors.find((d) => /alias/i.test(d.message));
    assert.ok(e, `${label}: no error names the aliases: ${r.errors.map(formatDiagnostic).join('; ')}`);
    assert.ok(e.line >= 1 && e.column >= 1);
  }
});

test('an alias bomb of scalars is refused too: 5,000 aliases of a 1 MB string', (t) => {
  // js-yaml shares a scalar between its aliases, so the file loads in little memory; but
  // every alias is a full copy for whatever comes next (a 5 GB document once expanded,
  // and as many 1 MB rows in SQLite when aliased into descriptions).
  const big = 'x'.repeat(1_000_000);
  const text = BASE.replace('    - name: writers\n', `    - name: writers\n      description: &big ${big}\n${Array.from({ length: 5000 }, (_, i) => `    - name: copy-${i}\n      description: *big\n`).join('')}`);
  const r = loadBytes(Buffer.from(text));
  assert.ok(!r.ok, `5,000 aliases of a 1 MB scalar were accepted (${r.ok ? r.desired.groups.length : 0} groups, ~${r.ok ? Math.round(r.desired.groups.reduce((n, g) => n + (g.description?.length ?? 0), 0) / 1e6) : 0} MB of descriptions to write)`);
  assert.ok(r.errors.some((d) => /alias/i.test(d.message)), r.errors.map(formatDiagnostic).join('; '));
});

test('aliases of a {{env}} template cannot multiply the expanded secret into an out-of-memory crash', async (t) => {
  // 2,000 aliases of one string holding 2,000 templates: 48 kB of YAML. Each alias is
  // expanded separately, so with a 1 kB variable that is 4 GB of strings. The validator
  // must refuse it (alias limit) with exit 1 and a clear error, not die.
  const tmp = tempDir(t);
  const text = BASE.replace(
    '    - name: writers\n',
    `    - name: writers\n      description: &t "${'{{env BIG}}'.repeat(2000)}"\n${Array.from({ length: 2000 }, (_, i) => `    - name: t${i}\n      description: *t\n`).join('')}`,
  );
  const file = tmp.write('config.yml', text);
  const r = await runCli(['validate', '-c', file], {
    env: { BIG: 'b'.repeat(1000), CI_BOT_KEY: ENV_SECRET, NODE_OPTIONS: '--max-old-space-size=256' },
    timeoutMs: 120_000,
  });
  assert.equal(r.code, 1, `keygate validate exited ${String(r.code)} (a crash, not a refusal); stderr ends: ${r.stderr.slice(-300)}`);
  assert.match(r.stdout + r.stderr, /alias/i);
});
