/**
 * Soak (npm run test:soak; not part of npm test): SOAK_SECONDS (default 600)
 * of mixed valid and invalid traffic through a real `keygate serve`, with the
 * config file rewritten every few seconds (two valid versions that disagree
 * on every request, and now and then an invalid one that must change
 * nothing), plus a brute-force client and slow-header connections.
 *
 * Asserts: no 5xx at all (the upstream always answers 200, so any 5xx is
 * keygate's); every answer is the one a single config version gives (a
 * consistent snapshot, never a mix, never a version not active at the time);
 * RSS and file descriptors stable from start to end (both printed); slowloris
 * and idle connections are cut by the server's timeouts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { renameSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tempConfig } from '../helpers/tmp.ts';
import { eventually, sleep, startUpstream } from '../helpers/serve.ts';
import { call, fdCount, MB, rssBytes, startQuietServe } from '../helpers/hostile.ts';

const SECONDS = Number(process.env.SOAK_SECONDS ?? 600);
const RELOAD_EVERY_MS = Number(process.env.SOAK_RELOAD_MS ?? 3000);

const K1 = 'kg_soak_one_6Hn2Wc8Rt4Yp1Zs9';
const K2 = 'kg_soak_two_3Bq7Md5Lx9Fv2Jk6';
const K3A = 'kg_soak_three_a_8Ty4Gh1Ns6Pw3';
const K3B = 'kg_soak_three_b_2Xc9Vb5Qm7Ld4';
const KEYS = [K1, K2, K3A, K3B, 'kg_soak_never_valid_0000000000'] as const;
const PATHS = ['/a/1', '/b/2', '/c/3'] as const;

type Version = 'A' | 'B';

/**
 * A and B disagree on nearly every (key, path): the groups' rules are swapped,
 * K2 is disabled in B, K3's material rotates, K1 changes group.
 */
function config(v: Version, upstream: string): string {
  const a = v === 'A';
  return `version: 1
config:
  keygate:
    upstream: ${upstream}
    failed_auth_per_minute: 3000
    upstream_timeout_ms: 5000
    reload_debounce_ms: 50
  groups:
    - name: alpha
      description: version ${v}
      allow:
        - methods: [GET]
          paths: ["${a ? '/a/**' : '/b/**'}"]
    - name: beta
      allow:
        - methods: [GET]
          paths: ["${a ? '/b/**' : '/a/**'}", "/c/*"]
  api-keys:
    - name: one
      group: ${a ? 'alpha' : 'beta'}
      key: ${K1}
    - name: two
      group: alpha
      key: ${K2}
      disabled: ${a ? 'false' : 'true'}
    - name: three
      group: beta
      key: ${a ? K3A : K3B}
`;
}

const BROKEN = (upstream: string): string => `${config('A', upstream)}    - name: broken
      group: no-such-group
      key: kg_soak_broken_entry_1234567
`;

interface Expected {
  status: number;
  group?: string;
}

/** What version `v` answers for `key` on `path`. */
function expected(v: Version, key: string, path: string): Expected {
  const a = v === 'A';
  let group: string | null = null;
  if (key === K1) group = a ? 'alpha' : 'beta';
  else if (key === K2) group = a ? 'alpha' : null;
  else if (key === (a ? K3A : K3B)) group = 'beta';
  if (group === null) return { status: 401 };
  const alphaPaths = a ? ['/a/'] : ['/b/'];
  const betaPaths = a ? ['/b/', '/c/'] : ['/a/', '/c/'];
  const allowed = (group === 'alpha' ? alphaPaths : betaPaths).some((p) => path.startsWith(p));
  return allowed ? { status: 200, group } : { status: 403 };
}

interface Epoch {
  version: Version;
  /** Earliest moment it may be active: when its file was written. */
  from: number;
  /** Latest moment it may still be active: when the next version was seen applied (Infinity until then). */
  until: number;
}

test(`soak: ${SECONDS} s of mixed traffic with reloads every ${RELOAD_EVERY_MS} ms`, { timeout: (SECONDS + 180) * 1000 }, async (t) => {
  const up = await startUpstream(t, (req, res) => {
    req.resume();
    req.on('end', () => {
      const body = JSON.stringify({ name: req.headers['x-api-key-name'] ?? null, group: req.headers['x-api-key-group'] ?? null });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  });
  // The recorder would grow for ten minutes: keep only a count.
  up.seen.push = () => 0;
  const dir = tempConfig(t, config('A', up.url));
  // Warn-level logs: ten minutes of info lines (one per request) would fill the runner's memory.
  const kg = await startQuietServe(t, dir.config, ['--db', dir.db]);
  const pid = kg.child.pid as number;
  const sha = (text: string): string => createHash('sha256').update(text).digest('hex');
  const status = async (): Promise<{ applied: { sha256: string }; last_reload: { result: string; sha256: string | null } | null }> =>
    JSON.parse((await call(kg.admin, '/status')).text) as { applied: { sha256: string }; last_reload: { result: string; sha256: string | null } | null };

  const epochs: Epoch[] = [{ version: 'A', from: 0, until: Infinity }];
  const stats = {
    requests: 0,
    byStatus: {} as Record<string, number>,
    inconsistent: [] as string[],
    fiveHundreds: [] as string[],
    reloads: 0,
    brokenReloads: 0,
    attacker: {} as Record<string, number>,
  };
  const end = Date.now() + SECONDS * 1000;
  let stopping = false;

  // --- The config writer: A ↔ B every few seconds, an invalid file every fifth time.
  const writer = (async () => {
    let current: Version = 'A';
    let n = 0;
    while (Date.now() < end - 1000) {
      await sleep(RELOAD_EVERY_MS);
      n++;
      const write = (text: string): void => {
        if (n % 2 === 0) {
          // Editor-style save: write aside, rename over.
          writeFileSync(`${dir.config}.tmp`, text);
          renameSync(`${dir.config}.tmp`, dir.config);
        } else writeFileSync(dir.config, text);
      };
      if (n % 5 === 0) {
        const broken = BROKEN(up.url);
        write(broken);
        const failed = await eventually(async () => {
          const s = await status();
          return s.last_reload?.result === 'failure' && s.last_reload.sha256 === sha(broken);
        }, 60_000, 50);
        assert.ok(failed, 'an invalid file was not reported as a failed reload');
        stats.brokenReloads++;
        // The active version is unchanged; write it back.
        const text = config(current, up.url);
        write(text);
        continue;
      }
      const next: Version = current === 'A' ? 'B' : 'A';
      const text = config(next, up.url);
      const writtenAt = performance.now();
      epochs.push({ version: next, from: writtenAt, until: Infinity });
      write(text);
      if (n % 7 === 0) kg.child.kill('SIGHUP');
      const applied = await eventually(async () => (await status()).applied.sha256 === sha(text), 60_000, 20);
      assert.ok(applied, `version ${next} was never applied`);
      const seenAt = performance.now();
      (epochs[epochs.length - 2] as Epoch).until = seenAt;
      current = next;
      stats.reloads++;
    }
  })();

  const possible = (startedAt: number, endedAt: number): Version[] => {
    const out = new Set<Version>();
    for (const e of epochs) if (e.from <= endedAt && e.until >= startedAt) out.add(e.version);
    return [...out];
  };

  // --- Valid and stale clients: each request is checked against every version active meanwhile.
  const client = async (id: number): Promise<void> => {
    // Spread over many addresses, so that expected 401s (stale keys) stay under each address's bucket.
    const agents = Array.from({ length: 32 }, (_, i) => new http.Agent({ keepAlive: true, maxSockets: 1, localAddress: `127.0.${10 + id}.${i + 1}` }));
    try {
      let i = 0;
      while (!stopping && Date.now() < end) {
        i++;
        const key = KEYS[(i * 7 + id) % KEYS.length] as string;
        const path = `${PATHS[(i * 3 + id) % PATHS.length] as string}`;
        const startedAt = performance.now();
        let r: { status: number; text: string };
        try {
          r = await call(kg.proxy, path, { headers: { 'x-api-key': key }, agent: agents[i % agents.length] as http.Agent });
        } catch (err) {
          stats.fiveHundreds.push(`${path}: connection error ${(err as Error).message}`);
          continue;
        }
        const endedAt = performance.now();
        stats.requests++;
        stats.byStatus[r.status] = (stats.byStatus[r.status] ?? 0) + 1;
        if (r.status >= 500) {
          stats.fiveHundreds.push(`${path} → ${r.status} ${r.text.slice(0, 100)}`);
          continue;
        }
        if (r.status === 429) continue; // a stale key from an address that failed too often: not a snapshot question
        const got: Expected = r.status === 200 ? { status: 200, group: (JSON.parse(r.text) as { group: string }).group } : { status: r.status };
        const versions = possible(startedAt, endedAt);
        const ok = versions.some((v) => {
          const want = expected(v, key, path);
          return want.status === got.status && (want.group === undefined || want.group === got.group);
        });
        if (!ok && stats.inconsistent.length < 20) {
          stats.inconsistent.push(`${key.slice(0, 12)}… ${path} → ${JSON.stringify(got)}; possible versions ${versions.join(',')}: ${versions.map((v) => JSON.stringify(expected(v, key, path))).join(' or ')}`);
        }
      }
    } finally {
      for (const a of agents) a.destroy();
    }
  };

  // --- A brute-force client on its own address: only 401 or 429, never slowing the others down.
  const attacker = (async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 4, localAddress: '127.0.0.2' });
    try {
      while (!stopping && Date.now() < end) {
        const r = await call(kg.proxy, '/a/1', { headers: { 'x-api-key': `kg_guess_${randomBytes(10).toString('hex')}` }, agent }).catch(() => ({ status: -1 }));
        stats.attacker[r.status] = (stats.attacker[r.status] ?? 0) + 1;
        if (r.status >= 500 || r.status === -1) stats.fiveHundreds.push(`attacker → ${r.status}`);
      }
    } finally {
      agent.destroy();
    }
  })();

  // --- Slow-header and idle connections: the server's timeouts must cut them.
  const port = Number(new URL(kg.proxy).port);
  const hostile = (drip: boolean): Promise<{ ms: number; byServer: boolean }> =>
    new Promise((resolve) => {
      let byUs = false;
      const opened = performance.now();
      const s = net.connect({ host: '127.0.0.1', port, localAddress: '127.0.0.5' });
      let timer: NodeJS.Timeout | null = null;
      s.on('error', () => undefined);
      s.on('connect', () => {
        if (!drip) return;
        s.write(`GET /a/1 HTTP/1.1\r\nHost: x\r\nx-api-key: ${K1}\r\n`);
        timer = setInterval(() => s.write(`X-Drip: ${Date.now()}\r\n`), 1000);
      });
      let got = '';
      s.on('data', (c: Buffer) => (got += c.toString('latin1').slice(0, 40)));
      s.on('close', () => {
        if (timer !== null) clearInterval(timer);
        if (process.env.SOAK_DEBUG) console.log(`hostile ${drip ? 'drip' : 'idle'} closed after ${((performance.now() - opened) / 1000).toFixed(1)} s, got ${JSON.stringify(got)}`);
        resolve({ ms: performance.now() - opened, byServer: !byUs });
      });
      // Never wait forever: after 5 minutes the test gives up on this connection (and says so).
      setTimeout(() => {
        byUs = true;
        s.destroy();
      }, 300_000).unref();
    });
  const slow = Array.from({ length: 50 }, (_, i) => hostile(i % 2 === 0));

  // --- Memory and descriptors: measured after a warm-up, and again at the end.
  await sleep(Math.min(30_000, (SECONDS * 1000) / 10));
  const rssStart = rssBytes(pid);
  const fdStart = fdCount(pid);
  const samples: string[] = [];
  const sampler = setInterval(() => samples.push(`${Math.round((end - Date.now()) / 1000)}s left: RSS ${(rssBytes(pid) / MB).toFixed(1)} MB, ${fdCount(pid)} fds`), 60_000);

  await Promise.all([writer, attacker, ...Array.from({ length: 6 }, (_, i) => client(i))]);
  stopping = true;
  clearInterval(sampler);
  const slowClosed = await Promise.all(slow);
  await sleep(500);
  const rssEnd = rssBytes(pid);
  const fdEnd = fdCount(pid);

  const report = [
    `requests: ${stats.requests} (${JSON.stringify(stats.byStatus)}), attacker: ${JSON.stringify(stats.attacker)}`,
    `reloads: ${stats.reloads} applied, ${stats.brokenReloads} invalid files refused`,
    `RSS start ${(rssStart / MB).toFixed(1)} MB, end ${(rssEnd / MB).toFixed(1)} MB; fds start ${fdStart}, end ${fdEnd}`,
    `slow/idle connections cut after ${(Math.min(...slowClosed.map((c) => c.ms)) / 1000).toFixed(1)}–${(Math.max(...slowClosed.map((c) => c.ms)) / 1000).toFixed(1)} s`,
    ...samples,
  ];
  for (const line of report) t.diagnostic(line);
  if (stats.fiveHundreds.length > 0) console.log(`[soak] keygate's last log lines:\n${kg.stderrTail().slice(-4000)}`);
  console.log(`[soak] ${report.join('\n[soak] ')}`);

  assert.deepEqual(stats.fiveHundreds.slice(0, 20), [], 'keygate answered 5xx or cut a connection');
  assert.deepEqual(stats.inconsistent, [], 'answers that no single config version gives');
  // How many requests and reloads fit in the time is the machine's business (reported above), not an assertion.
  assert.ok(stats.requests > 0 && stats.reloads > 0, `nothing happened: ${stats.requests} requests, ${stats.reloads} reloads`);
  assert.ok((stats.attacker[429] ?? 0) > 0, 'the attacker was never throttled');
  assert.deepEqual(slowClosed.filter((c) => !c.byServer).length, 0, 'keygate never cut some slow-header or idle connections (the test closed them after 5 minutes)');
  assert.ok(rssEnd - rssStart < Math.max(40 * MB, rssStart * 0.3), `RSS grew from ${(rssStart / MB).toFixed(1)} to ${(rssEnd / MB).toFixed(1)} MB`);
  assert.ok(fdEnd <= fdStart + 10, `file descriptors grew from ${fdStart} to ${fdEnd}`);
  assert.equal(kg.child.exitCode, null);
  assert.equal(await kg.stop(), 0);
});
