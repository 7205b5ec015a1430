/**
 * Hostile faults, part 5: an upstream that refuses, resets, hangs, answers
 * garbage or a huge header. Each request gets the documented 502/504, or a cut
 * connection once the response had started; the proxy keeps serving, and its
 * file descriptors and memory are the same after ~1,000 such requests as
 * before. The soak suite runs 10,000.
 */
import { test } from 'node:test';
import { runUpstreamFaults } from './helpers/faults.ts';

test('upstream faults give 502/504 or a cut connection, and leak neither sockets nor memory (1,000 requests)', async (t) => {
  const s = await runUpstreamFaults(t, { requests: 1000, log: (l) => t.diagnostic(l) });
  t.diagnostic(`fds ${s.fdBefore} → ${s.fdAfter}; RSS ${s.rssBeforeMb.toFixed(1)} → ${s.rssAfterMb.toFixed(1)} MB`);
});
