/**
 * Soak: many more SIGKILLs during apply of 20,000 keys than the fast suite
 * runs, through the apply engine in a warm child and through the real CLI
 * (`node bin/keygate.js apply`, killed anywhere from start-up to exit).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crashSeries } from '../helpers/crash.ts';

const RUNS = Number(process.env.SOAK_CRASH_RUNS ?? 60);
const CLI_RUNS = Number(process.env.SOAK_CRASH_CLI_RUNS ?? 12);

test(`crash safety: ${RUNS} engine kills and ${CLI_RUNS} CLI kills during apply of 20,000 keys`, { timeout: 60 * 60_000 }, async (t) => {
  const s = await crashSeries(t, { keys: 20_000, runs: RUNS, cliRuns: CLI_RUNS, log: (l) => t.diagnostic(l) });
  const line = `${s.runs} engine kills (${s.old} old state, ${s.new} new state, ${s.killedMidway} mid-way) and ${s.cliRuns} CLI kills: every database intact and whole`;
  t.diagnostic(line);
  console.log(`[soak] crash: ${line}`);
  assert.equal(s.runs, RUNS);
  assert.equal(s.cliRuns, CLI_RUNS);
  assert.ok(s.old > 0 && s.new > 0, 'the kills covered both sides of the commit');
});
