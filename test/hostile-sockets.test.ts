/**
 * Hostile input, part 6: sockets and upgrades.
 *
 * - Every connection keygate is handed is released again, whatever happens on
 *   it: upgrade requests refused with 401/403/429/400, upgrades the upstream
 *   refuses, resets or never answers, client aborts, malformed requests,
 *   working WebSocket tunnels, and clients that never close. The proof is the
 *   `keygate serve` child's own open descriptors (/proc/<pid>/fd), counted
 *   before and after hundreds of such connections.
 * - SIGTERM ends the process (exit 0) with a WebSocket tunnel open.
 * - Only WebSocket upgrades are tunnelled: an h2c upgrade (or an unknown token)
 *   is forwarded as a plain request without its upgrade headers, so an upstream
 *   that would switch to h2c never gets the chance, and the HTTP/2 preface that
 *   follows gets no pass.
 *
 * Waits are for events (a response, a close, a descriptor count) with generous
 * deadlines as hang guards only; no test asserts a duration.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import http, { type IncomingMessage } from 'node:http';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer } from 'ws';
import { tempConfig } from './helpers/tmp.ts';
import { eventually, startServe } from './helpers/serve.ts';
import { fdCount, mapLimit, parseStatuses } from './helpers/hostile.ts';

const READER_KEY = 'kg_sockets_reader_4Jf8Lq2Wz6Xc9Vb1';
const ADMIN_KEY = 'kg_sockets_admin_7Rt3Yp5Nm1Kd8Hs2';
const PER_MINUTE = 20;

function config(upstream: string, extra = ''): string {
  return `version: 1
config:
  keygate:
    upstream: ${upstream}
    failed_auth_per_minute: ${PER_MINUTE}
    upstream_timeout_ms: 1500
${extra}
  groups:
    - name: readers
      allow:
        - methods: [GET]
          paths: ["/api/**", "/ws/**"]
  api-keys:
    - name: reader
      group: readers
      key: ${READER_KEY}
    - name: admin
      group: admin
      key: ${ADMIN_KEY}
`;
}

interface WsUpstream {
  url: string;
  /** Upgrade requests the upstream received, by path. */
  upgrades: string[];
  /** Plain requests the upstream received: method, url, headers. */
  requests: Array<{ method: string; url: string; headers: IncomingMessage['headers'] }>;
  /** Bytes that reached the upstream on a connection it had switched to h2c. */
  afterSwitch: string[];
}

/**
 * An upstream that speaks WebSocket on /ws/echo, and misbehaves on purpose on other upgrade paths:
 * refuses (/ws/refuse, with a body), answers as a plain server would (/ws/plain, keep-alive),
 * resets (/ws/reset), never answers (/ws/hang), and switches to h2c whenever asked to (the
 * upstream keygate must never let switch).
 */
async function startWsUpstream(t: TestContext): Promise<WsUpstream> {
  const upgrades: string[] = [];
  const requests: WsUpstream['requests'] = [];
  const afterSwitch: string[] = [];
  const server = http.createServer((req, res) => {
    requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    req.resume();
    req.on('end', () => res.end(JSON.stringify({ url: req.url })));
  });
  const wss = new WebSocketServer({ noServer: true });
  wss.on('connection', (ws) => ws.on('message', (m) => ws.send(`echo:${m.toString()}`)));
  const sockets = new Set<Duplex>();
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    const path = req.url ?? '';
    upgrades.push(path);
    if (String(req.headers.upgrade).toLowerCase() === 'h2c') {
      socket.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n');
      socket.on('data', (c: Buffer) => afterSwitch.push(c.toString('latin1')));
      return;
    }
    if (path.startsWith('/ws/echo')) wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
    else if (path.startsWith('/ws/refuse')) socket.end('HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 12\r\n\r\nno websocket');
    else if (path.startsWith('/ws/plain')) socket.write('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\nplain');
    else if (path.startsWith('/ws/reset')) socket.destroy();
    // /ws/hang: never answers.
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  t.after(
    () =>
      new Promise<void>((resolve) => {
        for (const c of wss.clients) c.terminate();
        for (const s of sockets) s.destroy();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return { url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`, upgrades, requests, afterSwitch };
}

const WS_HEADERS = 'Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n';

function upgradeRequest(path: string, key: string | null, extra = ''): string {
  return `GET ${path} HTTP/1.1\r\nHost: gateway.test\r\n${key === null ? '' : `x-api-key: ${key}\r\n`}${WS_HEADERS}${extra}\r\n`;
}

type Leave =
  /** Read the answer, send one byte, close (FIN), and let go of the socket. */
  | 'byte-and-close'
  /** Close (destroy) right after sending the request, before any answer. */
  | 'abort'
  /** Read the answer, then keep the connection open until keygate closes it. */
  | 'wait-for-server';

interface Probe {
  /** Status of the first answer, or null when none came. */
  status: number | null;
  /** Whether keygate closed the connection (only watched with 'wait-for-server'). */
  closedByServer: boolean;
}

/** One raw connection: writes `bytes`, then leaves as `leave` says. Hang guard: 20 s. */
function probe(base: string, bytes: string, leave: Leave, localAddress?: string): Promise<Probe> {
  const u = new URL(base);
  return new Promise((resolve) => {
    let text = '';
    let done = false;
    const s = net.connect({ host: u.hostname, port: Number(u.port), ...(localAddress !== undefined ? { localAddress } : {}) });
    const finish = (closedByServer: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(guard);
      resolve({ status: parseStatuses(text)[0] ?? null, closedByServer });
    };
    const guard = setTimeout(() => {
      s.destroy();
      finish(false);
    }, 20_000);
    s.on('error', () => undefined);
    s.on('connect', () => {
      s.write(bytes);
      if (leave === 'abort') {
        s.destroy();
        finish(false);
      }
    });
    s.on('data', (c: Buffer) => {
      text += c.toString('latin1');
      if (leave === 'byte-and-close' && text.includes('\r\n\r\n')) {
        // The answer has begun: one more byte, then this side closes and lets go.
        s.end('x', () => {
          s.destroy();
          finish(false);
        });
      }
    });
    s.on('close', () => finish(leave === 'wait-for-server'));
  });
}

async function openWebSocket(proxy: string, path: string): Promise<WebSocket> {
  const ws = new WebSocket(`${proxy.replace('http', 'ws')}${path}`, { headers: { 'x-api-key': READER_KEY } });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`websocket refused with ${res.statusCode ?? '?'}`)));
  });
  return ws;
}

async function echo(ws: WebSocket, text: string): Promise<string> {
  const reply = new Promise<string>((resolve) => ws.once('message', (m) => resolve(m.toString())));
  ws.send(text);
  return reply;
}

test('every socket is released: refused upgrades, refusing and failing upstreams, aborts, tunnels (hundreds of connections)', async (t) => {
  const up = await startWsUpstream(t);
  const dir = tempConfig(t, config(up.url));
  const kg = await startServe(t, dir.config, { args: ['--db', dir.db] });
  const pid = kg.child.pid as number;

  // Warm up every path once, so that whatever keygate opens for good (pool, listeners) is in the baseline.
  const warm = await openWebSocket(kg.proxy, '/ws/echo');
  assert.equal(await echo(warm, 'warm'), 'echo:warm');
  warm.close();
  await new Promise((r) => warm.once('close', r));
  assert.ok(await eventually(async () => (await probe(kg.proxy, upgradeRequest('/ws/plain', READER_KEY), 'wait-for-server')).closedByServer, 20_000));
  const before = fdCount(pid);
  t.diagnostic(`keygate holds ${before} descriptors before`);

  const kinds: Array<{ name: string; bytes: string; leave: Leave; statuses: ReadonlyArray<number | null>; address?: (i: number) => string }> = [
    // Refused by keygate itself, before anything reaches the upstream.
    { name: 'upgrade without a key (401)', bytes: upgradeRequest('/ws/echo', null), leave: 'byte-and-close', statuses: [401], address: (i) => `127.0.2.${1 + (i % 40)}` },
    { name: 'upgrade to a forbidden path (403)', bytes: upgradeRequest('/admin/ws', READER_KEY), leave: 'byte-and-close', statuses: [403] },
    { name: 'upgrade with a path that cannot be normalised (400)', bytes: upgradeRequest('/ws/%2e%2e/%2e%2e/admin', READER_KEY), leave: 'byte-and-close', statuses: [400] },
    { name: 'upgrade with the key twice (400)', bytes: upgradeRequest('/ws/echo', READER_KEY, `x-api-key: ${READER_KEY}\r\n`), leave: 'byte-and-close', statuses: [400], address: (i) => `127.0.3.${1 + (i % 40)}` },
    { name: 'upgrades from a throttled address (401, then 429)', bytes: upgradeRequest('/ws/echo', 'kg_wrong_key_for_the_throttle_0'), leave: 'byte-and-close', statuses: [401, 429], address: () => '127.0.0.2' },
    { name: 'refused upgrade, the client never closes (keygate closes it)', bytes: upgradeRequest('/ws/echo', null), leave: 'wait-for-server', statuses: [401], address: (i) => `127.0.4.${1 + (i % 40)}` },
    // Admitted by keygate; the upstream refuses, answers as a plain server, resets or hangs.
    { name: 'the upstream refuses the upgrade (403 with a body)', bytes: upgradeRequest('/ws/refuse', READER_KEY), leave: 'byte-and-close', statuses: [403] },
    { name: 'the upstream answers as a plain server (200, keep-alive)', bytes: upgradeRequest('/ws/plain', READER_KEY), leave: 'byte-and-close', statuses: [200] },
    { name: 'the upstream answers as a plain server, the client never closes', bytes: upgradeRequest('/ws/plain', READER_KEY), leave: 'wait-for-server', statuses: [200] },
    { name: 'the upstream resets (502)', bytes: upgradeRequest('/ws/reset', READER_KEY), leave: 'byte-and-close', statuses: [502] },
    { name: 'the upstream never answers (504)', bytes: upgradeRequest('/ws/hang', READER_KEY), leave: 'byte-and-close', statuses: [504] },
    { name: 'the client aborts while the upstream has not answered', bytes: upgradeRequest('/ws/hang', READER_KEY), leave: 'abort', statuses: [null] },
    { name: 'the client aborts an upgrade the upstream would accept', bytes: upgradeRequest('/ws/echo', READER_KEY), leave: 'abort', statuses: [null] },
    // Not upgrades at all: a malformed request, and a refused request whose announced body never comes.
    { name: 'a malformed request (400)', bytes: 'GET /api/x HTTP/1.1\r\nHost: gateway.test\r\nBad Header Line\r\n\r\n', leave: 'byte-and-close', statuses: [400], address: (i) => `127.0.5.${1 + (i % 40)}` },
    { name: 'a malformed request, the client never closes', bytes: 'GET /api/x HTTP/1.1\r\nHost: gateway.test\r\nBad Header Line\r\n\r\n', leave: 'wait-for-server', statuses: [400], address: (i) => `127.0.5.${1 + (i % 40)}` },
    {
      name: 'a refused POST whose body never comes',
      bytes: 'POST /api/x HTTP/1.1\r\nHost: gateway.test\r\ncontent-length: 100000\r\n\r\npartial',
      leave: 'wait-for-server',
      statuses: [401],
      address: (i) => `127.0.6.${1 + (i % 40)}`,
    },
  ];
  const PER_KIND = 25;
  const jobs = kinds.flatMap((k) => Array.from({ length: PER_KIND }, (_, i) => ({ k, i })));
  const results = await mapLimit(jobs, 40, async ({ k, i }) => ({ k, r: await probe(kg.proxy, k.bytes, k.leave, k.address?.(i)) }));

  // Working tunnels too: opened, used, closed by the client (cleanly or by a reset).
  await mapLimit(Array.from({ length: 40 }, (_, i) => i), 10, async (i) => {
    const ws = await openWebSocket(kg.proxy, `/ws/echo/${i}`);
    assert.equal(await echo(ws, `m${i}`), `echo:m${i}`);
    const closed = new Promise((r) => ws.once('close', r));
    if (i % 2 === 0) ws.close();
    else ws.terminate();
    await closed;
  });

  for (const k of kinds) {
    const got = results.filter((x) => x.k === k).map((x) => x.r);
    for (const r of got) assert.ok(k.statuses.includes(r.status), `${k.name}: answered ${String(r.status)}, expected ${k.statuses.join(' or ')}`);
    if (k.leave === 'wait-for-server') assert.ok(got.every((r) => r.closedByServer), `${k.name}: keygate left a connection open`);
  }
  assert.ok(results.some((x) => x.r.status === 429), 'the throttled address got 429s');
  assert.ok(!up.upgrades.some((p) => p.startsWith('/admin')), 'a refused upgrade reached the upstream');

  // Every one of those connections is released: keygate's descriptors come back to where they were.
  const released = await eventually(() => fdCount(pid) <= before + 3, 60_000, 100);
  assert.ok(released, `keygate still holds ${fdCount(pid)} descriptors (before: ${before}) after ${jobs.length + 40} connections were closed`);
  t.diagnostic(`descriptors: ${before} before, ${fdCount(pid)} after ${jobs.length + 40} connections`);

  // And it still serves.
  const ws = await openWebSocket(kg.proxy, '/ws/echo');
  assert.equal(await echo(ws, 'still'), 'echo:still');
  ws.terminate();
});

test('SIGTERM with a WebSocket tunnel open and a refused upgrade lingering: the process closes them and exits 0', async (t) => {
  const up = await startWsUpstream(t);
  const dir = tempConfig(t, config(up.url, '    shutdown_grace_ms: 1000'));
  const kg = await startServe(t, dir.config, { args: ['--db', dir.db] });
  const ws = await openWebSocket(kg.proxy, '/ws/echo');
  assert.equal(await echo(ws, 'hi'), 'echo:hi');
  const wsClosed = new Promise<void>((resolve) => ws.once('close', () => resolve()));
  // A refused upgrade whose client keeps the connection open.
  const lingering = probe(kg.proxy, upgradeRequest('/ws/echo', null), 'wait-for-server');
  await eventually(() => /"status":401/.test(kg.stderr()), 10_000);
  kg.child.kill('SIGTERM');
  // Hang guard only: the process must end by itself; how soon is not asserted.
  const code = await Promise.race([kg.exited, new Promise<'still running'>((r) => setTimeout(() => r('still running'), 30_000).unref())]);
  assert.equal(code, 0, `keygate ${code === 'still running' ? 'was still running 30 s after SIGTERM' : `exited with ${String(code)}`}:\n${kg.stderr().slice(-2000)}`);
  await wsClosed;
  assert.equal((await lingering).closedByServer, true);
});

test('only WebSocket upgrades are tunnelled: h2c and unknown upgrades are forwarded as plain requests, and the HTTP/2 preface after them gets no pass', async (t) => {
  const up = await startWsUpstream(t);
  const dir = tempConfig(t, config(up.url));
  const kg = await startServe(t, dir.config, { args: ['--db', dir.db] });
  const u = new URL(kg.proxy);

  /**
   * Sends `first`; once its answer is complete, sends `then` on the same connection, and waits for
   * keygate to close the connection (hang guard: 10 s, then `closed` is false).
   */
  const conversation = (first: string, then: string): Promise<{ text: string; closed: boolean }> =>
    new Promise((resolve) => {
      let text = '';
      let sent = false;
      let guarded = false;
      const s = net.connect({ host: u.hostname, port: Number(u.port) });
      const guard = setTimeout(() => {
        guarded = true;
        s.destroy();
      }, 10_000);
      s.on('error', () => undefined);
      s.on('connect', () => s.write(first));
      s.on('data', (c: Buffer) => {
        text += c.toString('latin1');
        const end = text.indexOf('\r\n\r\n');
        const cl = /content-length: *(\d+)/i.exec(text);
        if (!sent && end !== -1 && (cl === null || text.length >= end + 4 + Number(cl[1]))) {
          sent = true;
          s.write(then);
        }
      });
      s.on('close', () => {
        clearTimeout(guard);
        resolve({ text, closed: !guarded });
      });
    });

  const preface = `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nGET /admin/after-preface HTTP/1.1\r\nHost: gateway.test\r\nx-api-key: ${READER_KEY}\r\n\r\n`;
  for (const [label, headers] of [
    ['h2c', 'Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n'],
    ['an unknown token', 'Connection: Upgrade\r\nUpgrade: keygate-test-protocol/1\r\n'],
    ['websocket offered together with h2c', 'Connection: Upgrade\r\nUpgrade: websocket, h2c\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n'],
    ['websocket with POST', 'Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n'],
  ] as const) {
    await t.test(`${label}: the upstream sees a plain request and switches nothing`, async () => {
      const method = label === 'websocket with POST' ? 'POST' : 'GET';
      const path = `/api/plain/${label.replace(/\W+/g, '-')}`;
      const requestsBefore = up.requests.length;
      const upgradesBefore = up.upgrades.length;
      const { text, closed } = await conversation(`${method} ${path} HTTP/1.1\r\nHost: gateway.test\r\nx-api-key: ${ADMIN_KEY}\r\n${headers}\r\n`, preface);
      const statuses = parseStatuses(text);
      assert.equal(statuses[0], 200, `answered:\n${text.slice(0, 400)}`);
      assert.ok(!statuses.includes(101), 'keygate passed a 101 Switching Protocols on');
      assert.equal(up.upgrades.length, upgradesBefore, `the upstream was asked to upgrade: ${up.upgrades.slice(upgradesBefore).join(', ')}`);
      const seen = up.requests.slice(requestsBefore);
      assert.deepEqual(
        seen.map((r) => r.url),
        [path],
        'exactly the plain request reached the upstream (the preface and what follows it did not)',
      );
      const h = seen[0]?.headers ?? {};
      assert.equal(h.upgrade, undefined, 'the Upgrade header reached the upstream');
      assert.equal(h['http2-settings'], undefined, 'HTTP2-Settings reached the upstream');
      assert.ok(!/upgrade/i.test(String(h.connection ?? '')), `Connection: ${String(h.connection)}`);
      assert.equal(h['x-api-key-name'], 'admin', 'the plain request went through keygate\'s checks');
      assert.deepEqual(up.afterSwitch, [], 'bytes reached the upstream over a switched connection');
      // The preface is refused by keygate (400) or the connection closed: never forwarded.
      for (const s of statuses.slice(1)) assert.ok(s === 400 || s === 505, `the preface got ${s}`);
      assert.ok(closed, 'keygate kept the connection open after the HTTP/2 preface');
    });
  }

  await t.test('a plain request with an h2c upgrade is still checked: no key, 401', async () => {
    const before = up.requests.length;
    const switchedBefore = up.afterSwitch.length;
    const { text } = await conversation(
      'GET /api/plain/anonymous HTTP/1.1\r\nHost: gateway.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n',
      preface,
    );
    assert.equal(parseStatuses(text)[0], 401);
    assert.equal(up.requests.length, before);
    assert.equal(up.afterSwitch.length, switchedBefore);
  });

  await t.test('many h2c upgrade requests on one kept-alive connection are each answered, and add nothing to the socket per request', async () => {
    const n = 25;
    const one = `GET /api/plain/kept HTTP/1.1\r\nHost: gateway.test\r\nx-api-key: ${READER_KEY}\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n`;
    // One request at a time, the next once the answer before it is complete (as a keep-alive client does).
    const text = await new Promise<string>((resolve) => {
      let got = '';
      let answered = 0;
      const s = net.connect({ host: u.hostname, port: Number(u.port) }, () => s.write(one));
      const done = (): void => {
        clearTimeout(guard);
        s.destroy();
        resolve(got);
      };
      const guard = setTimeout(done, 10_000);
      s.on('data', (d: Buffer) => {
        got += d.toString('latin1');
        const complete = got.split('{"url":').length - 1;
        if (complete >= n) return done();
        if (complete > answered) {
          answered = complete;
          s.write(one);
        }
      });
      s.on('close', done);
      s.on('error', done);
    });
    assert.deepEqual(parseStatuses(text), Array.from({ length: n }, () => 200), text.slice(-600));
    assert.doesNotMatch(kg.stderr(), /MaxListenersExceeded/, 'each upgrade request added a listener to the socket');
  });

  await t.test('a WebSocket upgrade is still tunnelled', async () => {
    const ws = await openWebSocket(kg.proxy, '/ws/echo');
    assert.equal(await echo(ws, 'ok'), 'echo:ok');
    ws.terminate();
  });
});
