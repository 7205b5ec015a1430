/**
 * Hostile input, part 4: brute force and floods against a real `keygate serve`.
 *
 * The whole of 127.0.0.0/8 is loopback, so test clients bind to 127.0.0.2,
 * 127.0.0.3 … (`localAddress`) and keygate (on 127.0.0.1) sees them as
 * different peers. A slow-header (slowloris) connection is answered 408 once
 * its request head has taken 15 s (checked every second); one such connection
 * is opened at the start and checked at the end.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { tempConfig } from './helpers/tmp.ts';
import { eventually, sleep, startUpstream } from './helpers/serve.ts';
import { call, fdCount, mapLimit, percentile, startQuietServe } from './helpers/hostile.ts';

const VALID_KEY = 'kg_flood_valid_key_8Ne4Vb1Qs6Yh3Jd';
const PER_MINUTE = 30;

function config(upstream: string): string {
  return `version: 1
config:
  keygate:
    upstream: ${upstream}
    failed_auth_per_minute: ${PER_MINUTE}
  api-keys:
    - name: valid
      group: admin
      key: ${VALID_KEY}
`;
}

const ATTACKER = '127.0.0.2';
const CLIENT = '127.0.0.3';

/** A valid client's latencies (ms) for `n` sequential requests from `localAddress`. */
async function validClient(proxy: string, n: number, localAddress: string, stop?: () => boolean): Promise<{ statuses: number[]; ms: number[] }> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1, localAddress });
  const statuses: number[] = [];
  const ms: number[] = [];
  try {
    for (let i = 0; i < n && !(stop?.() ?? false); i++) {
      const started = performance.now();
      const r = await call(proxy, `/valid/${i}`, { headers: { 'x-api-key': VALID_KEY }, agent });
      ms.push(performance.now() - started);
      statuses.push(r.status);
    }
  } finally {
    agent.destroy();
  }
  return { statuses, ms };
}

test('brute force and floods', async (t) => {
  // The runner and keygate must see distinct source addresses on 127.0.0.0/8.
  const probe = net.connect({ host: '127.0.0.1', port: 9, localAddress: ATTACKER });
  const bindable = await new Promise<boolean>((resolve) => {
    probe.on('connect', () => resolve(true));
    probe.on('error', (e: NodeJS.ErrnoException) => resolve(e.code !== 'EADDRNOTAVAIL' && e.code !== 'EINVAL'));
  });
  probe.destroy();
  assert.ok(bindable, 'cannot bind a client socket to 127.0.0.2: the loopback range is not routed here');

  const up = await startUpstream(t);
  const dir = tempConfig(t, config(up.url));
  // Warn-level logs: thousands of request lines would load the runner, not keygate.
  const kg = await startQuietServe(t, dir.config, ['--db', dir.db]);
  const pid = kg.child.pid as number;

  // Idle keep-alive connections, opened now and checked last: the proxy must close them (keepAliveTimeout).
  const keepAliveStarted = performance.now();
  const keepAlive = Promise.all(
    Array.from(
      { length: 20 },
      () =>
        new Promise<{ closedAt: Promise<number> }>((resolve, reject) => {
          const s = net.connect({ host: '127.0.0.1', port: Number(new URL(kg.proxy).port), localAddress: '127.0.0.9' });
          s.on('error', () => undefined);
          const closedAt = new Promise<number>((r) => s.on('close', () => r(performance.now())));
          let got = '';
          s.on('data', (c: Buffer) => {
            got += c.toString();
            if (got.includes('\r\n\r\n')) resolve({ closedAt });
          });
          s.on('connect', () => s.write(`GET /keepalive HTTP/1.1\r\nHost: x\r\nx-api-key: ${VALID_KEY}\r\n\r\n`));
          setTimeout(() => reject(new Error('no answer')), 30_000);
        }),
    ),
  );
  keepAlive.catch(() => undefined); // awaited (and so reported) in the last subtest

  // One slowloris connection, opened now and checked last: a header line every 500 ms, never the end of the head.
  const slowStarted = performance.now();
  const slowAnswer = new Promise<{ text: string; at: number }>((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port: Number(new URL(kg.proxy).port), localAddress: '127.0.0.10' });
    let got = '';
    const drip = setInterval(() => s.writable && s.write(`X-Drip-${Math.floor(Math.random() * 1e6)}: 1\r\n`), 500);
    s.on('error', () => undefined);
    s.on('data', (c: Buffer) => (got += c.toString()));
    s.on('close', () => {
      clearInterval(drip);
      resolve({ text: got, at: performance.now() });
    });
    s.on('connect', () => s.write(`GET /slowloris HTTP/1.1\r\nHost: x\r\nx-api-key: ${VALID_KEY}\r\n`));
  });

  await t.test('keygate sees each bound loopback address as its own peer', async () => {
    await call(kg.proxy, '/whoami', { headers: { 'x-api-key': VALID_KEY }, localAddress: CLIENT });
    assert.equal(up.seen.at(-1)?.headers['x-forwarded-for'], CLIENT);
  });

  await t.test('thousands of wrong keys from one address are throttled (429) without slowing a valid client at another', async () => {
    const baseline = await validClient(kg.proxy, 100, CLIENT);
    assert.ok(baseline.statuses.every((s) => s === 200));

    let attackDone = false;
    const attackStarted = performance.now();
    const attacker = (async () => {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 32, localAddress: ATTACKER });
      try {
        return await mapLimit(Array.from({ length: 3000 }, (_, i) => i), 32, async () => {
          const r = await call(kg.proxy, '/api/secret', {
            agent,
            // A forged X-Forwarded-For changes nothing: keygate trusts no proxy here.
            headers: { 'x-api-key': `kg_guess_${randomBytes(12).toString('hex')}`, 'x-forwarded-for': `10.${Math.floor(Math.random() * 255)}.0.1` },
          });
          return { status: r.status, retryAfter: r.headers['retry-after'] };
        });
      } finally {
        attackDone = true;
        agent.destroy();
      }
    })();
    const during = await validClient(kg.proxy, 100_000, CLIENT, () => attackDone);
    const attempts = await attacker;
    const attackSeconds = (performance.now() - attackStarted) / 1000;

    const count = (s: number): number => attempts.filter((a) => a.status === s).length;
    t.diagnostic(`attacker: ${count(401)} × 401, ${count(429)} × 429 of ${attempts.length} in ${attackSeconds.toFixed(1)} s`);
    assert.equal(count(401) + count(429), attempts.length, `unexpected statuses: ${[...new Set(attempts.map((a) => a.status))].join(', ')}`);
    // The bucket holds PER_MINUTE and refills at PER_MINUTE per minute while the attack lasts.
    const allowed = PER_MINUTE + Math.ceil((attackSeconds * PER_MINUTE) / 60) + 1;
    assert.ok(count(401) >= 1 && count(401) <= allowed, `${count(401)} guesses were looked up in ${attackSeconds.toFixed(1)} s; at most ${allowed} may be`);
    assert.ok(attempts.filter((a) => a.status === 429).every((a) => Number(a.retryAfter) >= 1), '429 without Retry-After');

    const p = (xs: number[], q: number): string => percentile(xs, q).toFixed(1);
    t.diagnostic(
      `valid client: baseline p50 ${p(baseline.ms, 50)} ms p99 ${p(baseline.ms, 99)} ms; during the attack ${during.ms.length} requests, p50 ${p(during.ms, 50)} ms p99 ${p(during.ms, 99)} ms max ${Math.max(...during.ms).toFixed(1)} ms`,
    );
    assert.ok(during.statuses.length >= 5, 'the valid client made too few requests to judge');
    assert.ok(during.statuses.every((s) => s === 200), `the valid client got ${[...new Set(during.statuses)].join(', ')}`);
    // How much the flood slows valid requests is a figure (the diagnostic above), not an assertion: the machine is shared.

    // The throttled address stays throttled, even with a valid key (the check runs before any look-up).
    const again = await call(kg.proxy, '/valid', { headers: { 'x-api-key': VALID_KEY }, localAddress: ATTACKER });
    assert.equal(again.status, 429);
    // Its neighbours are not: not 127.0.0.1, not another address.
    assert.equal((await call(kg.proxy, '/valid', { headers: { 'x-api-key': VALID_KEY } })).status, 200);
    assert.equal((await call(kg.proxy, '/valid', { headers: { 'x-api-key': VALID_KEY }, localAddress: '127.0.0.4' })).status, 200);
  });

  await t.test('each of many attacking addresses has its own bucket', async () => {
    const addresses = Array.from({ length: 20 }, (_, i) => `127.0.1.${i + 10}`);
    const results = await Promise.all(
      addresses.map(async (localAddress) => {
        const agent = new http.Agent({ keepAlive: true, maxSockets: 4, localAddress });
        try {
          const statuses = await mapLimit(Array.from({ length: PER_MINUTE + 20 }, (_, i) => i), 4, async () =>
            (await call(kg.proxy, '/x', { agent, headers: { 'x-api-key': `kg_wrong_${randomBytes(8).toString('hex')}` } })).status,
          );
          return { localAddress, looked: statuses.filter((s) => s === 401).length, throttled: statuses.filter((s) => s === 429).length };
        } finally {
          agent.destroy();
        }
      }),
    );
    for (const r of results) {
      assert.ok(r.looked >= PER_MINUTE - 1 && r.looked <= PER_MINUTE + 5, `${r.localAddress}: ${r.looked} × 401`);
      assert.ok(r.throttled >= 15, `${r.localAddress}: ${r.throttled} × 429`);
    }
    const valid = await validClient(kg.proxy, 20, CLIENT);
    assert.ok(valid.statuses.every((s) => s === 200));
  });

  await t.test('slow-header connections and thousands of idle sockets do not stop valid requests', async () => {
    const fdsBefore = fdCount(pid);
    const sockets: net.Socket[] = [];
    const open = (localAddress: string, first: string | null): Promise<void> =>
      new Promise((resolve) => {
        const s = net.connect({ host: new URL(kg.proxy).hostname, port: Number(new URL(kg.proxy).port), localAddress });
        s.on('error', () => undefined);
        s.on('connect', () => {
          if (first !== null) s.write(first);
          resolve();
        });
        sockets.push(s);
      });
    // 200 slowloris connections: a request head that never ends, one header line every 200 ms.
    await Promise.all(Array.from({ length: 200 }, () => open('127.0.0.5', `GET /slow HTTP/1.1\r\nHost: x\r\nx-api-key: ${VALID_KEY}\r\n`)));
    const drip = setInterval(() => {
      for (const s of sockets.slice(0, 200)) if (!s.destroyed) s.write(`X-Drip-${Math.floor(Math.random() * 1e6)}: 1\r\n`);
    }, 200);
    // 3,000 idle connections that never send a byte, from two more addresses.
    for (let batch = 0; batch < 30; batch++) {
      await Promise.all(Array.from({ length: 100 }, (_, i) => open(i % 2 === 0 ? '127.0.0.6' : '127.0.0.7', null)));
    }
    try {
      assert.ok(await eventually(() => fdCount(pid) >= fdsBefore + 3000), `keygate holds ${fdCount(pid)} fds (before: ${fdsBefore})`);
      const valid = await validClient(kg.proxy, 50, CLIENT);
      t.diagnostic(`with 3,200 hostile connections open: valid p50 ${percentile(valid.ms, 50).toFixed(1)} ms, max ${Math.max(...valid.ms).toFixed(1)} ms`);
      assert.ok(valid.statuses.every((s) => s === 200), `valid client got ${[...new Set(valid.statuses)].join(', ')}`);
      // New connections are still accepted and answered, from a fresh address too.
      const fresh = await Promise.all(Array.from({ length: 20 }, (_, i) => call(kg.proxy, `/fresh/${i}`, { headers: { 'x-api-key': VALID_KEY }, localAddress: '127.0.0.8' })));
      assert.ok(fresh.every((r) => r.status === 200));
    } finally {
      clearInterval(drip);
      for (const s of sockets) s.destroy();
    }
    // Every one of those connections is released again: nothing leaks.
    assert.ok(await eventually(() => fdCount(pid) <= fdsBefore + 5), `keygate still holds ${fdCount(pid)} fds (before: ${fdsBefore})`);
  });

  await t.test('a request head still incomplete after 15 s is answered 408 request_timeout and the connection closed', async () => {
    // A hang guard only: the server's own timer answers it (15 s, checked every second).
    const slow = await Promise.race([slowAnswer, sleep(Math.max(0, 90_000 - (performance.now() - slowStarted))).then(() => null)]);
    assert.ok(slow !== null, 'the slow-header connection was still open 90 s after it started');
    t.diagnostic(`slow-header connection answered and closed after ${((slow.at - slowStarted) / 1000).toFixed(1)} s`);
    assert.match(slow.text, /^HTTP\/1\.1 408 /);
    assert.match(slow.text, /"error":\s*"request_timeout"/);
    assert.ok(!up.seen.some((r) => r.url === '/slowloris'), 'the slow request reached the upstream');
  });

  await t.test('idle keep-alive connections are closed by the proxy (keepAliveTimeout)', async () => {
    const sockets = await keepAlive;
    // A hang guard only: keepAliveTimeout is 5 s.
    const closed = await Promise.race([Promise.all(sockets.map((s) => s.closedAt)), sleep(60_000).then(() => null)]);
    assert.ok(closed !== null, 'idle keep-alive connections were still open 60 s after their response');
    t.diagnostic(`idle keep-alive connections closed ${((Math.max(...closed) - keepAliveStarted) / 1000).toFixed(1)} s after their response`);
  });
});
