/**
 * Hostile faults, part 1: `apply` is SIGKILLed at random moments while it
 * writes a 10,000-key change. After every kill the database opens, passes
 * `PRAGMA integrity_check`, and holds either the whole old state or the whole
 * new one (key names, digests, groups and descriptions compared as sets).
 * The soak suite (npm run test:soak) runs many more kills, and the real CLI.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crashSeries } from './helpers/crash.ts';

// 10,000 keys keep this under ~15 s on CI's two cores; the soak suite uses 20,000 (HOSTILE_CRASH_KEYS overrides).
const KEYS = Number(process.env.HOSTILE_CRASH_KEYS ?? 10_000);

test(`SIGKILL during apply of ${KEYS.toLocaleString('en')} keys leaves the whole old state or the whole new one`, async (t) => {
  const runs = 15;
  const s = await crashSeries(t, { keys: KEYS, runs, log: (l) => t.diagnostic(l) });
  t.diagnostic(`${s.runs} kills: ${s.old} left the old state, ${s.new} the new state; ${s.killedMidway} landed before the apply had finished`);
  assert.equal(s.runs, runs);
  // The kills are spread over the apply's whole duration: most of them land mid-way.
  assert.ok(s.killedMidway >= runs / 3, `only ${s.killedMidway} of ${runs} kills landed before the apply finished`);
});
