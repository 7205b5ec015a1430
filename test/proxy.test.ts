import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { Readable } from 'node:stream';
import { request } from 'undici';
import { WebSocketServer, WebSocket } from 'ws';
import { tempConfig } from './helpers/tmp.ts';
import { runCli } from './helpers/cli.ts';
import { eventually, freePort, startServe, startUpstream } from './helpers/serve.ts';

const ADMIN_KEY = 'kg_test_admin_key_0123456789abcdef';
const READER_KEY = 'kg_test_reader_key_0123456789abcdef';
const EXPIRED_KEY = 'kg_test_expired_key_0123456789abcdef';
const DISABLED_KEY = 'kg_test_disabled_key_0123456789abcdef';
const NARROW_KEY = 'kg_test_narrow_key_0123456789abcdef';
const ALL_KEYS = [ADMIN_KEY, READER_KEY, EXPIRED_KEY, DISABLED_KEY, NARROW_KEY];

function config(upstream: string, extra = ''): string {
  return `version: 1
config:
  keygate:
    upstream: ${upstream}
    failed_auth_per_minute: 6
    upstream_timeout_ms: 700
    last_used_flush_ms: 200
${extra}
  groups:
    - name: readers
      allow:
        - methods: [GET, HEAD]
          paths: ["/api/card/**", "/public/*"]
  api-keys:
    - name: admin
      group: admin
      key: ${ADMIN_KEY}
    - name: reader
      group: readers
      key: ${READER_KEY}
    - name: expired
      group: admin
      key: ${EXPIRED_KEY}
      expires_at: 2020-01-01T00:00:00Z
    - name: disabled
      group: admin
      key: ${DISABLED_KEY}
      disabled: true
    - name: narrow
      group: readers
      key: ${NARROW_KEY}
      allow:
        - paths: ["/api/card/1"]
`;
}

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  json: () => Record<string, unknown>;
}

/** One request with node:http, which sends the path exactly as given (no URL normalisation). */
function call(base: string, path: string, headers: Record<string, string | string[]> = {}, method = 'GET'): Promise<Answer> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: u.port, path, method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json: () => JSON.parse(text) as Record<string, unknown> });
      });
    });
    req.on('error', reject);
    req.end();
  });
}

function assertNoSecrets(text: string, what: string): void {
  for (const k of ALL_KEYS) assert.ok(!text.includes(k), `${what} contains a key`);
}

test('the proxy authenticates, authorises and forwards with identity headers', async (t) => {
  const up = await startUpstream(t);
  const dir = tempConfig(t, config(up.url));
  const kg = await startServe(t, dir.config, { args: ['--db', dir.db] });

  await t.test('answers 401 missing_api_key with WWW-Authenticate when no key is sent', async () => {
    const r = await call(kg.proxy, '/api/card/1');
    assert.equal(r.status, 401);
    assert.equal(r.json().error, 'missing_api_key');
    assert.match(String(r.headers['www-authenticate']), /ApiKey/);
    assert.equal(typeof r.json().message, 'string');
  });

  await t.test('answers 401 invalid_api_key for unknown, expired and disabled keys', async () => {
    for (const key of ['kg_not_a_known_key_at_all_12345', EXPIRED_KEY, DISABLED_KEY]) {
      const r = await call(kg.proxy, '/api/card/1', { 'x-api-key': key });
      assert.equal(r.status, 401, key.slice(0, 12));
      assert.equal(r.json().error, 'invalid_api_key');
      assert.match(String(r.headers['www-authenticate']), /ApiKey/);
    }
  });

  await t.test('answers 400 when the key header is sent twice', async () => {
    const r = await call(kg.proxy, '/api/card/1', { 'x-api-key': [READER_KEY, READER_KEY] });
    assert.equal(r.status, 400);
    assert.equal(r.json().error, 'duplicate_api_key');
  });

  await t.test('forwards an allowed request with the caller identity and without the key', async () => {
    const before = up.seen.length;
    const r = await call(kg.proxy, '/api/card/7?x=1', {
      'x-api-key': READER_KEY,
      'x-api-key-group': 'admin',
      'x-api-key-name': 'spoofed',
      'x-api-key-id': '1',
    });
    assert.equal(r.status, 200);
    assert.equal(up.seen.length, before + 1);
    const seen = up.seen.at(-1)!;
    assert.equal(seen.url, '/api/card/7?x=1');
    assert.equal(seen.headers['x-api-key'], undefined, 'the key header reached the upstream');
    assert.equal(seen.headers['x-api-key-group'], 'readers');
    assert.equal(seen.headers['x-api-key-name'], 'reader');
    assert.match(String(seen.headers['x-api-key-id']), /^\d+$/);
    // Exactly one of each identity header: the spoofed ones were removed.
    assert.equal(seen.rawHeaders.filter((h) => h.toLowerCase() === 'x-api-key-group').length, 1);
    assert.equal(seen.headers['x-forwarded-for'], '127.0.0.1');
    assert.equal(seen.headers['x-forwarded-proto'], 'http');
    assert.match(String(seen.headers.via), /keygate/);
    assert.match(String(r.headers.via), /keygate/);
  });

  await t.test('replaces a client-sent X-Forwarded-For from an untrusted peer', async () => {
    await call(kg.proxy, '/api/card/1', { 'x-api-key': READER_KEY, 'x-forwarded-for': '6.6.6.6' });
    assert.equal(up.seen.at(-1)!.headers['x-forwarded-for'], '127.0.0.1');
  });

  await t.test('answers 403 forbidden for a route the group does not allow', async () => {
    const before = up.seen.length;
    for (const [method, path] of [['GET', '/api/user/1'], ['POST', '/api/card/1'], ['GET', '/public/a/b']] as const) {
      const r = await call(kg.proxy, path, { 'x-api-key': READER_KEY }, method);
      assert.equal(r.status, 403, `${method} ${path}`);
      assert.equal(r.json().error, 'forbidden');
    }
    assert.equal(up.seen.length, before, 'a forbidden request reached the upstream');
  });

  await t.test("narrows a group's rules with the key's own rules", async () => {
    assert.equal((await call(kg.proxy, '/api/card/1', { 'x-api-key': NARROW_KEY })).status, 200);
    assert.equal((await call(kg.proxy, '/api/card/2', { 'x-api-key': NARROW_KEY })).status, 403);
  });

  await t.test('refuses paths that cannot be normalised safely and forwards the normalised path', async () => {
    const bad = await call(kg.proxy, '/api/card/%2e%2e/%2e%2e/%2e%2e/admin', { 'x-api-key': READER_KEY });
    assert.equal(bad.status, 400);
    const slash = await call(kg.proxy, '/api/card%2F1', { 'x-api-key': READER_KEY });
    assert.equal(slash.status, 400);
    const escaped = await call(kg.proxy, '/api/card/1/../../user/1', { 'x-api-key': READER_KEY });
    assert.equal(escaped.status, 403, '.. must not escape the allowed prefix');
    const ok = await call(kg.proxy, '/api//card/./%31', { 'x-api-key': READER_KEY });
    assert.equal(ok.status, 200);
    assert.equal(up.seen.at(-1)!.url, '/api/card/1');
  });

  await t.test('admin keys may call every route', async () => {
    assert.equal((await call(kg.proxy, '/anything/at/all', { 'x-api-key': ADMIN_KEY }, 'DELETE')).status, 200);
  });

  await t.test('counts requests by outcome and auth failures by reason in /metrics', async () => {
    const m = await call(kg.admin, '/metrics');
    assert.equal(m.status, 200);
    const value = (re: RegExp): number => {
      const v = re.exec(m.text)?.[1];
      assert.ok(v !== undefined, `${re.source} not in /metrics:\n${m.text.split('\n').filter((l) => l.startsWith('keygate_') && !l.includes('process')).join('\n')}`);
      return Number(v);
    };
    assert.equal(value(/keygate_auth_failures_total\{reason="missing"\} (\d+)/), 1);
    assert.equal(value(/keygate_auth_failures_total\{reason="expired"\} (\d+)/), 1);
    assert.equal(value(/keygate_auth_failures_total\{reason="disabled"\} (\d+)/), 1);
    assert.equal(value(/keygate_auth_failures_total\{reason="invalid"\} (\d+)/), 1);
    assert.equal(value(/keygate_auth_failures_total\{reason="duplicate"\} (\d+)/), 1);
    assert.equal(value(/keygate_requests_total\{outcome="forbidden",status="403"\} (\d+)/), 5);
    assert.equal(value(/keygate_requests_total\{outcome="forwarded",status="200"\} (\d+)/), 5);
    assert.match(m.text, /keygate_upstream_duration_seconds_bucket/);
    assert.match(m.text, /keygate_keys\{source="config"\} 5/);
    assert.match(m.text, /keygate_last_reload_success 1/);
  });

  await t.test('throttles an address after too many failed authentications (429 with Retry-After)', async () => {
    // Five failures were spent above; the sixth empties the bucket.
    const sixth = await call(kg.proxy, '/api/card/1', { 'x-api-key': 'kg_wrong_key_wrong_key_wrong' });
    assert.equal(sixth.status, 401);
    const r = await call(kg.proxy, '/api/card/1', { 'x-api-key': 'kg_wrong_key_wrong_key_wrong' });
    assert.equal(r.status, 429);
    assert.equal(r.json().error, 'too_many_requests');
    assert.ok(Number(r.headers['retry-after']) >= 1);
    // Even a valid key is refused from a throttled address until the bucket refills: the check runs before any look-up.
    assert.equal((await call(kg.proxy, '/api/card/1', { 'x-api-key': READER_KEY })).status, 429);
  });

  await t.test('readiness, health and status', async () => {
    assert.equal((await call(kg.admin, '/healthz')).status, 200);
    assert.equal((await call(kg.admin, '/readyz')).status, 200);
    const s = (await call(kg.admin, '/status')).json() as {
      config_file: string;
      ready: boolean;
      applied: { sha256: string; revision: number };
      keys: { total: number };
      groups: number;
      last_reload: { result: string };
    };
    assert.equal(s.config_file, dir.config);
    assert.equal(s.ready, true);
    assert.equal(s.applied.sha256, createHash('sha256').update(readFileSync(dir.config)).digest('hex'));
    assert.equal(s.applied.revision, 1);
    assert.equal(s.keys.total, 5);
    assert.equal(s.groups, 3);
    assert.equal(s.last_reload.result, 'success');
  });

  await t.test('stops on SIGTERM, writes last-used times, and never printed a key', async () => {
    assert.equal(await kg.stop(), 0);
    assertNoSecrets(kg.stdout() + kg.stderr(), 'serve output');
    const list = await runCli(['keys', 'list', '--db', dir.db, '--json']);
    const keys = (JSON.parse(list.stdout) as { keys: Array<{ name: string; last_used_at: string | null }> }).keys;
    const byName = new Map(keys.map((k) => [k.name, k.last_used_at]));
    assert.notEqual(byName.get('reader'), null, 'reader was used');
    assert.notEqual(byName.get('admin'), null, 'admin was used');
    assert.equal(byName.get('disabled'), null, 'a refused key is not "used"');
    for (const f of [dir.db, `${dir.db}-wal`]) {
      try {
        assertNoSecrets(readFileSync(f).toString('latin1'), f);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
    }
  });
});

test('bodies stream both ways: the far side sees bytes before the near side has finished', async (t) => {
  const CHUNK = Buffer.alloc(256 * 1024, 7);
  let uploadFirstByte: (() => void) | null = null;
  const firstUploadByte = new Promise<void>((resolve) => (uploadFirstByte = resolve));
  let releaseDownload: (() => void) | null = null;
  const downloadReleased = new Promise<void>((resolve) => (releaseDownload = resolve));
  const up = await startUpstream(t, (req, res) => {
    if (req.method === 'POST') {
      let n = 0;
      req.on('data', (c: Buffer) => {
        if (n === 0) uploadFirstByte?.();
        n += c.length;
      });
      req.on('end', () => res.end(JSON.stringify({ received: n })));
      return;
    }
    req.resume();
    // Send the first part, then wait until the client has seen it before sending the rest.
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    res.write(CHUNK);
    void downloadReleased.then(() => res.end(CHUNK));
  });
  const dir = tempConfig(t, config(up.url));
  const kg = await startServe(t, dir.config, { args: ['--db', dir.db] });
  const u = new URL(kg.proxy);

  // Upload: the upstream receives data while the client is still holding the request open.
  const upload = http.request({ host: u.hostname, port: u.port, path: '/upload', method: 'POST', headers: { 'x-api-key': ADMIN_KEY, 'transfer-encoding': 'chunked' } });
  const uploadAnswer = new Promise<string>((resolve, reject) => {
    upload.on('response', (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => resolve(text));
    });
    upload.on('error', reject);
  });
  upload.write(CHUNK);
  await firstUploadByte; // would hang if the proxy waited for the whole body
  upload.end(CHUNK);
  assert.deepEqual(JSON.parse(await uploadAnswer), { received: 2 * CHUNK.length });

  // Download: the client receives the first part while the upstream has not finished.
  const got = await new Promise<number>((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: u.port, path: '/download', headers: { 'x-api-key': ADMIN_KEY } }, (res) => {
      let n = 0;
      res.on('data', (c: Buffer) => {
        n += c.length;
        if (n >= CHUNK.length) releaseDownload?.(); // would hang if the proxy buffered the whole answer
      });
      res.on('end', () => resolve(n));
    });
    req.on('error', reject);
    req.end();
  });
  assert.equal(got, 2 * CHUNK.length);
});

test('a 100 MB upload and download pass through without the proxy holding them in memory', async (t) => {
  const SIZE = 100 * 1024 * 1024;
  const up = await startUpstream(t, (req, res) => {
    if (req.method === 'POST') {
      let n = 0;
      req.on('data', (c: Buffer) => (n += c.length));
      req.on('end', () => res.end(JSON.stringify({ received: n })));
      return;
    }
    req.resume();
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': SIZE });
    const chunk = Buffer.alloc(64 * 1024, 7);
    let sent = 0;
    const pump = (): void => {
      while (sent < SIZE) {
        sent += chunk.length;
        if (!res.write(chunk)) return void res.once('drain', pump);
      }
      res.end();
    };
    pump();
  });
  const dir = tempConfig(t, config(up.url));
  const kg = await startServe(t, dir.config, { args: ['--db', dir.db] });
  const rss = (): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${kg.child.pid}/status`, 'utf8'))?.[1]) * 1024;
  await call(kg.proxy, '/warm-up', { 'x-api-key': ADMIN_KEY });
  const base = rss();
  let peak = base;
  const timer = setInterval(() => (peak = Math.max(peak, rss())), 5);
  try {
    const chunk = Buffer.alloc(64 * 1024, 1);
    async function* body(): AsyncGenerator<Buffer> {
      for (let sent = 0; sent < SIZE; sent += chunk.length) yield chunk;
    }
    const r = await request(`${kg.proxy}/upload`, { method: 'POST', headers: { 'x-api-key': ADMIN_KEY }, body: Readable.from(body()) });
    assert.deepEqual(await r.body.json(), { received: SIZE });
    const d = await request(`${kg.proxy}/download`, { headers: { 'x-api-key': ADMIN_KEY } });
    let got = 0;
    for await (const c of d.body) got += (c as Buffer).length;
    assert.equal(got, SIZE);
  } finally {
    clearInterval(timer);
  }
  assert.ok(peak - base < SIZE / 2, `proxy RSS grew by ${((peak - base) / 1e6).toFixed(1)} MB while 100 MB went each way`);
});

test('Expect: 100-continue: 100 Continue only after authentication; admitted uploads go through, refused ones are answered and closed', async (t) => {
  const up = await startUpstream(t, (req, res) => {
    let n = 0;
    req.on('data', (c: Buffer) => (n += c.length));
    req.on('end', () => res.end(JSON.stringify({ received: n, expect: req.headers.expect ?? null })));
  });
  const dir = tempConfig(t, config(up.url));
  const kg = await startServe(t, dir.config, { args: ['--db', dir.db] });
  const u = new URL(kg.proxy);
  const BODY = Buffer.alloc(300_000, 1);

  await t.test('an admitted upload: 100 Continue, then the body reaches the upstream', async () => {
    let continued = false;
    const answer = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = http.request(
        { host: u.hostname, port: u.port, path: '/upload', method: 'POST', agent: false, headers: { 'x-api-key': ADMIN_KEY, expect: '100-continue', 'content-length': BODY.length } },
        (res) => {
          let text = '';
          res.on('data', (c: Buffer) => (text += c.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
        },
      );
      req.on('continue', () => {
        continued = true;
        req.end(BODY);
      });
      req.on('error', reject);
    });
    assert.equal(answer.status, 200, answer.text);
    assert.ok(continued, 'no 100 Continue');
    assert.deepEqual(JSON.parse(answer.text), { received: BODY.length, expect: null });
  });

  for (const [label, key, path, status] of [
    ['no key', null, '/upload', 401],
    ['a key whose group may not POST', READER_KEY, '/api/card/1', 403],
  ] as const) {
    await t.test(`a refused upload (${label}) gets ${status} without 100 Continue, and the connection is closed`, async () => {
      const before = up.seen.length;
      const answer = await new Promise<{ text: string; closed: boolean }>((resolve) => {
        let text = '';
        const s = net.connect({ host: u.hostname, port: Number(u.port) });
        const guard = setTimeout(() => {
          s.destroy();
          resolve({ text, closed: false });
        }, 15_000);
        s.on('error', () => undefined);
        s.on('connect', () =>
          s.write(`POST ${path} HTTP/1.1\r\nHost: gateway.test\r\n${key === null ? '' : `x-api-key: ${key}\r\n`}Expect: 100-continue\r\nContent-Length: ${BODY.length}\r\n\r\n`),
        );
        s.on('data', (c: Buffer) => (text += c.toString('latin1')));
        s.on('close', () => {
          clearTimeout(guard);
          resolve({ text, closed: true });
        });
      });
      assert.ok(answer.text.startsWith(`HTTP/1.1 ${status} `), `answered:\n${answer.text}`);
      assert.ok(!answer.text.includes('100 Continue'), 'keygate invited the body of a refused request');
      assert.ok(answer.closed, 'keygate kept the connection of a refused Expect request open, waiting for a body it refused');
      assert.equal(up.seen.length, before, 'a refused upload reached the upstream');
    });
  }
});

test('WebSocket upgrades are authenticated, then tunnelled', async (t) => {
  const server = http.createServer();
  const wss = new WebSocketServer({ server });
  let identity: string | undefined;
  wss.on('connection', (ws, req) => {
    identity = req.headers['x-api-key-name'] as string;
    ws.on('message', (m) => ws.send(`echo:${m.toString()}`));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  t.after(() => {
    for (const c of wss.clients) c.terminate();
    wss.close();
    server.closeAllConnections();
    server.close();
  });
  const port = (server.address() as { port: number }).port;
  const dir = tempConfig(t, config(`http://127.0.0.1:${port}`));
  const kg = await startServe(t, dir.config, { args: ['--db', dir.db] });
  const wsUrl = kg.proxy.replace('http', 'ws');

  const ws = new WebSocket(`${wsUrl}/socket`, { headers: { 'x-api-key': ADMIN_KEY } });
  const reply = await new Promise<string>((resolve, reject) => {
    ws.on('open', () => ws.send('hello'));
    ws.on('message', (m) => resolve(m.toString()));
    ws.on('error', reject);
  });
  ws.close();
  assert.equal(reply, 'echo:hello');
  assert.equal(identity, 'admin');

  const refused = new WebSocket(`${wsUrl}/socket`);
  const status = await new Promise<number>((resolve) => {
    refused.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
    refused.on('open', () => resolve(101));
    refused.on('error', () => undefined);
  });
  assert.equal(status, 401);
});

test('upstream failures give 502 and 504, and a client abort closes the upstream request', async (t) => {
  let closedEarly = false;
  const up = await startUpstream(t, (req, res) => {
    if (req.url === '/slow') {
      res.on('close', () => {
        if (!res.writableFinished) closedEarly = true;
      });
      return; // never answers
    }
    if (req.url === '/hang-then-answer') {
      setTimeout(() => res.end('late'), 300);
      return;
    }
    res.end('ok');
  });
  const dir = tempConfig(t, config(up.url));
  const kg = await startServe(t, dir.config, { args: ['--db', dir.db] });

  const slow = await call(kg.proxy, '/slow', { 'x-api-key': ADMIN_KEY });
  assert.equal(slow.status, 504);
  assert.equal(slow.json().error, 'gateway_timeout');

  // A client that goes away: the upstream sees its request closed. (On a keygate whose upstream
  // timeout is far away, so that only the client's going can have closed it.)
  const patientDir = tempConfig(t, config(up.url).replace('upstream_timeout_ms: 700', 'upstream_timeout_ms: 600000'));
  const patient = await startServe(t, patientDir.config, { args: ['--db', patientDir.db] });
  closedEarly = false;
  const seenBefore = up.seen.length;
  const req = http.request(`${patient.proxy}/slow`, { headers: { 'x-api-key': ADMIN_KEY } });
  req.on('error', () => undefined);
  req.end();
  // Once the upstream has the request (an event, not a delay), the client goes away.
  assert.ok(await eventually(() => up.seen.length > seenBefore, 10_000), 'the request never reached the upstream');
  req.destroy();
  assert.ok(await eventually(() => closedEarly, 10_000), 'upstream request was not aborted');
  assert.ok(
    await eventually(() => /"path":"\/slow","status":499,"outcome":"client_closed"/.test(patient.stderr()), 10_000),
    `no client_closed line:\n${patient.stderr()}`,
  );

  const deadPort = await freePort();
  const dir2 = tempConfig(t, config(`http://127.0.0.1:${deadPort}`));
  const kg2 = await startServe(t, dir2.config, { args: ['--db', dir2.db] });
  const dead = await call(kg2.proxy, '/x', { 'x-api-key': ADMIN_KEY });
  assert.equal(dead.status, 502);
  assert.equal(dead.json().error, 'bad_gateway');
  // The proxy keeps serving afterwards.
  assert.equal((await call(kg.proxy, '/fine', { 'x-api-key': ADMIN_KEY })).status, 200);

  // One JSON line per request: method, path without its query, status, outcome, duration, key id and
  // name; 5xx at error level, 4xx and 2xx at info; never the key nor the query string.
  assert.equal((await call(kg.proxy, '/api/card/7?token=query-secret-value', { 'x-api-key': READER_KEY })).status, 200);
  assert.equal((await call(kg.proxy, '/api/card/8', { 'x-api-key': NARROW_KEY })).status, 403);
  assert.equal((await call(kg.proxy, '/no-key-here')).status, 401);
  const lines = (): Array<Record<string, unknown>> =>
    kg
      .stderr()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((o) => o.msg === 'request');
  assert.ok(await eventually(() => lines().some((l) => l.path === '/no-key-here')), `no request line for /no-key-here:\n${kg.stderr()}`);
  const byPath = (path: string): Record<string, unknown> => {
    const found = lines().filter((l) => l.path === path);
    assert.equal(found.length, 1, `one line for ${path}`);
    return found[0] as Record<string, unknown>;
  };
  const ok = byPath('/api/card/7');
  assert.equal(ok.level, 30);
  assert.equal(ok.method, 'GET');
  assert.equal(ok.status, 200);
  assert.equal(ok.outcome, 'forwarded');
  assert.equal(ok.key_name, 'reader');
  assert.equal(typeof ok.key_id, 'number');
  assert.equal(typeof ok.duration_ms, 'number');
  assert.equal(ok.component, 'proxy');
  assert.ok(!Number.isNaN(Date.parse(String(ok.time))), 'an ISO time');
  assert.deepEqual([byPath('/api/card/8').level, byPath('/api/card/8').status, byPath('/api/card/8').key_name], [30, 403, 'narrow']);
  const anon = byPath('/no-key-here');
  assert.deepEqual([anon.level, anon.status, anon.outcome, anon.key_id], [30, 401, 'unauthenticated', undefined]);
  const timeout = lines().find((l) => l.path === '/slow' && l.status === 504);
  assert.equal(timeout?.level, 50, '5xx lines are at error level');
  assert.equal(timeout?.outcome, 'upstream_error');
  assert.ok(!kg.stderr().includes('query-secret-value'), 'the query string reached the log');
  assert.ok(!kg.stderr().includes(READER_KEY) && !kg.stderr().includes(ADMIN_KEY), 'a key reached the log');
});

test('a request looping back into the proxy is refused with 508', async (t) => {
  const port = await freePort();
  const dir = tempConfig(t, config(`http://127.0.0.1:${port}`));
  const kg = await startServe(t, dir.config, { args: ['--db', dir.db, '--listen', `127.0.0.1:${port}`] });
  const r = await call(kg.proxy, '/x', { 'x-api-key': ADMIN_KEY });
  assert.equal(r.status, 508);
  assert.equal(r.json().error, 'loop_detected');
});

test('SIGTERM lets an in-flight request finish, then exits 0', async (t) => {
  const up = await startUpstream(t, (req, res) => {
    req.resume();
    setTimeout(() => res.end('finished'), 500);
  });
  const dir = tempConfig(t, config(up.url));
  const kg = await startServe(t, dir.config, { args: ['--db', dir.db] });
  const inflight = call(kg.proxy, '/slowish', { 'x-api-key': ADMIN_KEY });
  await eventually(() => up.seen.length > 0, 2000);
  kg.child.kill('SIGTERM');
  const r = await inflight;
  assert.equal(r.status, 200);
  assert.equal(r.text, 'finished');
  assert.equal(await kg.exited, 0);
  // Its request line was written before the process ended (request lines are buffered).
  assert.match(kg.stderr(), /"path":"\/slowish","status":200,"outcome":"forwarded"/);
});

test('SIGTERM cuts off a request still running when the grace period ends, and logs it', async (t) => {
  const up = await startUpstream(t, (req) => {
    req.resume(); // never answers
  });
  const dir = tempConfig(t, config(up.url, '    shutdown_grace_ms: 300'));
  const kg = await startServe(t, dir.config, { args: ['--db', dir.db] });
  const cut = call(kg.proxy, '/cut-off', { 'x-api-key': ADMIN_KEY }).catch((err: Error) => err);
  await eventually(() => up.seen.length > 0, 2000);
  kg.child.kill('SIGTERM');
  assert.ok((await cut) instanceof Error, 'the client connection was closed without an answer');
  assert.equal(await kg.exited, 0);
  assert.match(kg.stderr(), /"path":"\/cut-off","status":499,"outcome":"client_closed"/);
});

test('an invalid config at start is fatal: exit 1 with every error printed', async (t) => {
  const { serveExpectingFailure } = await import('./helpers/serve.ts');
  const dir = tempConfig(
    t,
    `version: 1
config:
  api-keys:
    - name: a
      group: nope
      key: kg_a_key_that_is_long_enough
    - name: b
      group: all-users
`,
  );
  const r = await serveExpectingFailure(dir.config);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /config\.yml:5:14: api-keys\[0\]\.group: unknown group "nope"/);
  assert.match(r.stderr, /config\.yml:7:7: api-keys\[1\]: exactly one of "key" or "key_hash"/);
});

test('npm start serves config.example.yml through the demo upstream', async (t) => {
  const dir = tempConfig(t, '');
  const kg = await startServe(t, 'config.example.yml', { npmStart: true, args: ['--db', dir.path('demo.db')] });
  const example = readFileSync(new URL('../config.example.yml', import.meta.url), 'utf8');
  const key = /key: (kg_demo_admin_[A-Za-z0-9_]+)/.exec(example)?.[1];
  assert.ok(key);
  assert.ok(await eventually(() => /curl -H "x-api-key: \$KEY" http:\/\/127\.0\.0\.1:\d+\/api\/card\/1/.test(kg.stdout())), kg.stdout());
  const ok = await call(kg.proxy, '/api/card/1', { 'x-api-key': key });
  assert.equal(ok.status, 200);
  const echo = ok.json() as { method: string; path: string; api_key: { name: string } };
  assert.equal(echo.path, '/api/card/1');
  assert.equal(echo.api_key.name, 'Admin API key');
  assert.ok(!ok.text.includes(key), 'the demo upstream echoed the key');
  assert.equal((await call(kg.proxy, '/api/card/1')).status, 401);
  assert.ok(!(kg.stdout() + kg.stderr()).includes(key), 'the key was printed');
});
