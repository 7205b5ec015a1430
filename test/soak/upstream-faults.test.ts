/**
 * Soak: 10,000 requests against a misbehaving upstream (see
 * test/helpers/faults.ts): every answer is the documented 502/504 or a cut
 * connection, and the proxy's descriptors and memory end where they started.
 */
import { test } from 'node:test';
import { runUpstreamFaults } from '../helpers/faults.ts';

const REQUESTS = Number(process.env.SOAK_FAULT_REQUESTS ?? 10_000);

test(`upstream faults: ${REQUESTS} requests, no leak`, { timeout: 30 * 60_000 }, async (t) => {
  const s = await runUpstreamFaults(t, { requests: REQUESTS, maxRssGrowthMb: 40, log: (l) => t.diagnostic(l) });
  const line = `fds ${s.fdBefore} → ${s.fdAfter}; RSS ${s.rssBeforeMb.toFixed(1)} → ${s.rssAfterMb.toFixed(1)} MB`;
  t.diagnostic(line);
  console.log(`[soak] upstream faults: ${line}`);
});
