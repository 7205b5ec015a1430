/**
 * The reload machine, driven deterministically: given these events at these
 * times, expect these actions (as sample-controller tests its sync handler).
 * No timers, no files, no clock: debounce, coalescing, the unchanged-bytes
 * skip, retries and last-good, each as a script.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ReconcileOutcome } from '../src/control/protocol.ts';
import { ReloadMachine, type ReloadAction, type ReloadEvent } from '../src/daemon/reload-machine.ts';

const APPLIED = 'a'.repeat(64);
const EDITED = 'b'.repeat(64);
const OTHER = 'c'.repeat(64);

function machine(opts: { debounceMs?: number; maxWaitMs?: number } = {}): ReloadMachine {
  const m = new ReloadMachine({ debounceMs: opts.debounceMs ?? 100, maxWaitMs: opts.maxWaitMs ?? 1000, retryMs: 1000, retryMaxMs: 8000 });
  m.started(APPLIED, 0);
  return m;
}

/** Feeds `[time, event]` pairs; returns the actions of each, in order, as `time: action` strings. */
function run(m: ReloadMachine, script: Array<[number, ReloadEvent]>): string[] {
  const out: string[] = [];
  for (const [t, e] of script) for (const a of m.handle(e, t)) out.push(`${t}: ${show(a)}`);
  return out;
}

function show(a: ReloadAction): string {
  switch (a.type) {
    case 'arm':
      return `arm ${a.at}`;
    case 'reconcile':
      return `reconcile skip=${a.skipIfSha256 === null ? 'none' : a.skipIfSha256.slice(0, 1)} (${a.trigger})`;
    case 'applied':
      return `applied ${a.outcome.sha256.slice(0, 1)} (${a.trigger})`;
    case 'unchanged':
      return `unchanged${a.recovered ? ' recovered' : ''}`;
    case 'failed':
      return `failed ${a.outcome.code}${a.log ? ' logged' : ''}${a.retryAt === null ? '' : ` retry ${a.retryAt}`}`;
    default:
      return a.type;
  }
}

const changed = (trigger = 'watch'): ReloadEvent => ({ type: 'changed', trigger });
const timer: ReloadEvent = { type: 'timer' };
const hashed = (sha256: string | null): ReloadEvent => ({ type: 'hashed', sha256 });
const applied = (sha256: string): ReloadEvent => ({
  type: 'reconciled',
  outcome: {
    kind: 'applied',
    sha256,
    settings: {} as never,
    summary: { create: 0, update: 1, delete: 0, unchanged: 0, keysDeleted: 0, keysMoved: 0, configKeys: 1 },
    changed: ['update key "k"'],
    revision: null,
    warnings: [],
  },
});
const failed = (code: string, error: string, retryable = false, sha256: string | null = EDITED): ReloadEvent => ({
  type: 'reconciled',
  outcome: { kind: 'failed', sha256, code, error, errors: [], retryable } satisfies ReconcileOutcome,
});

test('a burst of writes 20 ms apart is one reload, 100 ms after the last write', () => {
  const m = machine();
  const burst: Array<[number, ReloadEvent]> = Array.from({ length: 11 }, (_, i) => [i * 20, changed()]);
  assert.deepEqual(run(m, burst), burst.map(([t]) => `${t}: arm ${t + 100}`));
  assert.deepEqual(run(m, [[300, timer], [305, hashed(EDITED)], [340, applied(EDITED)]]), [
    '300: hash',
    '305: reconcile skip=a (watch)',
    '340: applied b (watch)',
  ]);
  assert.equal(m.appliedSha256, EDITED);
  assert.ok(m.idle);
});

test('events that never stop still reload within maxWaitMs of the first', () => {
  const m = machine({ debounceMs: 100, maxWaitMs: 1000 });
  const script: Array<[number, ReloadEvent]> = Array.from({ length: 30 }, (_, i) => [i * 50, changed()]);
  const actions = run(m, script);
  assert.equal(actions[0], '0: arm 100');
  // Re-armed at each event, but never later than 1000 ms after the first.
  assert.equal(actions.at(-1), '1450: arm 1000');
  assert.ok(actions.every((a) => Number(a.split(' ').at(-1)) <= 1000));
  assert.deepEqual(run(m, [[1000, timer]]), ['1000: hash']);
});

test('a file whose bytes are the applied ones is not reconciled', () => {
  const m = machine();
  assert.deepEqual(run(m, [[0, changed()], [100, timer], [101, hashed(APPLIED)]]), ['0: arm 100', '100: hash', '101: unchanged']);
  assert.ok(m.idle);
  assert.equal(m.lastReload?.trigger, 'start', 'an unchanged file is not a new reload attempt in /status');
});

test('events during a reload make exactly one more reload after it, which reads the file again', () => {
  const m = machine();
  assert.deepEqual(
    run(m, [
      [0, changed()],
      [100, timer],
      [101, hashed(EDITED)],
      [110, changed()],
      [120, changed()],
      [210, timer], // a stray timer while busy does nothing: the events wait for the reload
      [400, applied(EDITED)],
      [405, hashed(OTHER)],
      [450, applied(OTHER)],
    ]),
    [
      '0: arm 100',
      '100: hash',
      '101: reconcile skip=a (watch)',
      '400: applied b (watch)',
      '400: hash',
      '405: reconcile skip=b (watch)',
      '450: applied c (watch)',
    ],
  );
  assert.ok(m.idle);
});

test('SIGHUP reconciles at once, unchanged bytes too, and cancels a pending debounce', () => {
  const m = machine();
  assert.deepEqual(run(m, [[0, { type: 'force', trigger: 'SIGHUP' }]]), ['0: disarm', '0: reconcile skip=none (SIGHUP)']);
  assert.deepEqual(run(m, [[30, applied(APPLIED)]]), ['30: applied a (SIGHUP)']);
  assert.deepEqual(run(m, [[50, changed()], [60, { type: 'force', trigger: 'SIGHUP' }], [150, timer]]), [
    '50: arm 150',
    '60: disarm',
    '60: reconcile skip=none (SIGHUP)',
  ]);
});

test('SIGHUP during a reload forces one more reload after it, skipping the hash', () => {
  const m = machine();
  assert.deepEqual(
    run(m, [
      [0, changed()],
      [100, timer],
      [101, hashed(EDITED)],
      [150, { type: 'force', trigger: 'SIGHUP' }],
      [200, applied(EDITED)],
      [260, applied(EDITED)],
    ]),
    ['0: arm 100', '100: hash', '101: reconcile skip=a (watch)', '200: applied b (watch)', '200: reconcile skip=none (SIGHUP)', '260: applied b (SIGHUP)'],
  );
});

test('a failed reload keeps the last good file, is logged once per distinct error, and a valid file is applied', () => {
  const m = machine();
  const attempt = (t: number, e: ReloadEvent): string[] => run(m, [[t, changed()], [t + 100, timer], [t + 101, hashed(EDITED)], [t + 150, e]]).slice(3);
  assert.deepEqual(attempt(0, failed('config_invalid', 'config.yml:3:1: bad')), ['150: failed config_invalid logged']);
  assert.equal(m.appliedSha256, APPLIED, 'the last good file is still the applied one');
  assert.equal(m.fileInSync, false);
  assert.equal(m.lastReload?.result, 'failure');
  assert.equal(m.lastReload?.error, 'config.yml:3:1: bad');
  assert.deepEqual(attempt(1000, failed('config_invalid', 'config.yml:3:1: bad')), ['1150: failed config_invalid'], 'the same error is not logged again');
  assert.deepEqual(attempt(2000, failed('config_invalid', 'config.yml:9:1: worse')), ['2150: failed config_invalid logged']);
  assert.deepEqual(attempt(3000, applied(EDITED)), ['3150: applied b (watch)']);
  assert.equal(m.fileInSync, true);
  assert.equal(m.lastReload?.error, null);
});

test('a file that comes back to the applied bytes ends the failure; the same failure later is logged again', () => {
  const m = machine();
  assert.deepEqual(run(m, [[0, changed()], [100, timer], [101, hashed(null)], [120, failed('file_not_found', 'config.yml: file not found (deleted?)', false, null)]]), [
    '0: arm 100',
    '100: hash',
    '101: reconcile skip=a (watch)',
    '120: failed file_not_found logged',
  ]);
  assert.deepEqual(run(m, [[500, changed()], [600, timer], [601, hashed(APPLIED)]]), ['500: arm 600', '600: hash', '601: unchanged recovered']);
  assert.equal(m.fileInSync, true);
  assert.equal(m.lastReload?.result, 'unchanged');
  assert.deepEqual(run(m, [[900, changed()], [1000, timer], [1001, hashed(null)], [1020, failed('file_not_found', 'config.yml: file not found (deleted?)', false, null)]]).at(-1), '1020: failed file_not_found logged');
});

test('a failure that may pass on its own is retried after a wait that doubles, up to a limit', () => {
  const m = machine();
  const down = failed('KG_ERR_STORE_UNAVAILABLE', 'database unreachable', true);
  assert.deepEqual(run(m, [[0, changed()], [100, timer], [101, hashed(EDITED)], [150, down]]).slice(3), [
    '150: failed KG_ERR_STORE_UNAVAILABLE logged retry 1150',
    '150: arm 1150',
  ]);
  assert.deepEqual(run(m, [[1150, timer], [1151, hashed(EDITED)], [1200, down]]), [
    '1150: hash',
    '1151: reconcile skip=a (watch)',
    '1200: failed KG_ERR_STORE_UNAVAILABLE retry 3200',
    '1200: arm 3200',
  ]);
  assert.deepEqual(run(m, [[3200, timer], [3201, hashed(EDITED)], [3300, down]]).slice(2), ['3300: failed KG_ERR_STORE_UNAVAILABLE retry 7300', '3300: arm 7300']);
  assert.deepEqual(run(m, [[7300, timer], [7301, hashed(EDITED)], [7400, down]]).slice(2), ['7400: failed KG_ERR_STORE_UNAVAILABLE retry 15400', '7400: arm 15400']);
  assert.deepEqual(run(m, [[15400, timer], [15401, hashed(EDITED)], [15500, down]]).slice(2), ['15500: failed KG_ERR_STORE_UNAVAILABLE retry 23500', '15500: arm 23500'], 'capped at retryMaxMs');
  assert.deepEqual(run(m, [[23500, timer], [23501, hashed(EDITED)], [23600, applied(EDITED)]]).slice(2), ['23600: applied b (watch)']);
  assert.ok(m.idle);
  // After a success the wait starts from the beginning again.
  assert.deepEqual(run(m, [[30000, changed()], [30100, timer], [30101, hashed(OTHER)], [30200, down]]).at(-1), '30200: arm 31200');
});

test('an invalid file is not retried by itself: it waits for the next edit', () => {
  const m = machine();
  assert.deepEqual(run(m, [[0, changed()], [100, timer], [101, hashed(EDITED)], [150, failed('config_invalid', 'bad')]]).slice(3), ['150: failed config_invalid logged']);
  assert.ok(m.idle);
  assert.deepEqual(run(m, [[5000, timer]]), [], 'a stray timer does nothing');
});

test('an edit while waiting to retry is reloaded after the debounce, not after the retry wait', () => {
  const m = machine();
  run(m, [[0, changed()], [100, timer], [101, hashed(EDITED)], [150, failed('KG_ERR_STORE_UNAVAILABLE', 'down', true)]]);
  assert.deepEqual(run(m, [[400, changed()], [500, timer], [501, hashed(OTHER)]]), ['400: arm 500', '500: hash', '501: reconcile skip=a (watch)']);
});

test('nothing happens after stop', () => {
  const m = machine();
  assert.deepEqual(run(m, [[0, changed()], [10, { type: 'stop' }]]), ['0: arm 100', '10: disarm']);
  assert.deepEqual(run(m, [[100, timer], [110, changed()], [120, { type: 'force', trigger: 'SIGHUP' }]]), []);
});
