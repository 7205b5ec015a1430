/**
 * `keygate serve --workers 2`: two serving processes share the proxy's socket,
 * each with its own table fed by the one control plane. Every change (an API
 * write, a file edit) is enforced by every worker; /metrics and /status speak
 * for the whole daemon; a worker that dies is replaced; shutdown is graceful.
 * Requests go out on fresh connections so that both workers get some; the
 * upstream tells them apart by the `via` header each worker adds.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { eventually, startServe, startUpstream } from './helpers/serve.ts';
import { tempConfig } from './helpers/tmp.ts';
import { sha256 } from './helpers/config.ts';

const ADMIN_KEY = 'kg_workers_admin_key_0123456789ab';
const FILE_KEY = 'kg_workers_file_key_0123456789abcd';

function config(upstream: string, extra = ''): string {
  return `version: 1
config:
  keygate:
    upstream: ${upstream}
    failed_auth_per_minute: 1000000
    last_used_flush_ms: 200
    shutdown_grace_ms: 5000
  api-keys:
    - name: Admin API key
      group: admin
      key: ${ADMIN_KEY}
${extra}`;
}

/** One request on a connection of its own. */
function once(base: string, path: string, key: string): Promise<{ status: number; via: string | undefined }> {
  return new Promise((resolve, reject) => {
    const req = http.get(`${base}${path}`, { agent: false, headers: { 'x-api-key': key, connection: 'close' } }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, via: res.headers['x-seen-via'] as string | undefined }));
    });
    req.on('error', reject);
    // Hang guard: a connection the cluster primary had handed to a worker as it was killed is never answered.
    req.setTimeout(10_000, () => req.destroy(new Error('no answer in 10 s')));
  });
}

async function many(base: string, key: string, n = 40): Promise<{ statuses: Set<number>; workers: Set<string> }> {
  const statuses = new Set<number>();
  const workers = new Set<string>();
  for (let i = 0; i < n; i++) {
    const r = await once(base, `/w/${i}`, key);
    statuses.add(r.status);
    if (r.via !== undefined) workers.add(r.via);
  }
  return { statuses, workers };
}

/** Connections opened beforehand, so that a request can be sent on each the moment something happens. */
async function openConnections(base: string, n: number): Promise<net.Socket[]> {
  const u = new URL(base);
  return Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<net.Socket>((resolve, reject) => {
          const s = net.connect(Number(u.port), u.hostname, () => resolve(s));
          s.on('error', reject);
        }),
    ),
  );
}

/** Sends one request on each socket at once; resolves with each answer's status. */
function sendOnEach(sockets: net.Socket[], key: string): Promise<number[]> {
  return Promise.all(
    sockets.map(
      (s, i) =>
        new Promise<number>((resolve) => {
          let got = '';
          s.on('data', (c: Buffer) => (got += c.toString('latin1')));
          s.on('close', () => resolve(Number(/^HTTP\/1\.1 (\d{3})/.exec(got)?.[1] ?? 0)));
          s.write(`GET /w/at-once-${i} HTTP/1.1\r\nHost: keygate\r\nx-api-key: ${key}\r\nConnection: close\r\n\r\n`);
        }),
    ),
  );
}

async function admin(base: string, method: string, path: string, body?: object): Promise<{ status: number; json: Record<string, unknown> }> {
  const r = await fetch(`${base}${path}`, {
    method,
    headers: { 'x-api-key': ADMIN_KEY, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await r.text();
  return { status: r.status, json: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>) };
}

test('with --workers 2, every worker enforces every change, and the daemon reports and stops as one', async (t) => {
  let release: (() => void) | null = null;
  const up = await startUpstream(t, (req, res) => {
    req.resume();
    const answer = (): void => {
      res.writeHead(200, { 'content-type': 'text/plain', 'x-seen-via': String(req.headers.via ?? '') });
      res.end('ok');
    };
    if (req.url === '/slow') release = answer;
    else answer();
  });
  const dir = tempConfig(t, config(up.url));
  const kg = await startServe(t, dir.config, { args: ['--db', dir.db, '--workers', '2'] });

  await t.test('both workers serve, on the one listening socket', async () => {
    const r = await many(kg.proxy, ADMIN_KEY);
    assert.deepEqual([...r.statuses], [200]);
    assert.equal(r.workers.size, 2, `requests were served by ${r.workers.size} worker(s): ${[...r.workers].join(', ')}`);
    const status = (await admin(kg.admin, 'GET', '/status')).json;
    assert.equal((status.workers as unknown[]).length, 2);
  });

  let created = '';
  let createdId = 0;
  await t.test('a key created through the API is admitted by every worker as soon as the API answers', async () => {
    const ready = await openConnections(kg.proxy, 24);
    const r = await admin(kg.admin, 'POST', '/api/api-key', { name: 'made at run time', group_id: 2 });
    assert.equal(r.status, 200);
    created = r.json.unmasked_key as string;
    createdId = r.json.id as number;
    // The moment the answer is in: one request on each of connections spread over both workers.
    assert.deepEqual([...new Set(await sendOnEach(ready, created))], [200], 'a worker refused the new key after the API answered');
    const seen = await many(kg.proxy, created);
    assert.deepEqual([...seen.statuses], [200], 'a worker refused the new key after the API answered');
    assert.equal(seen.workers.size, 2);
  });

  await t.test('key uses seen by the workers reach last_used_at', async () => {
    assert.ok(
      await eventually(async () => {
        const keys = (await admin(kg.admin, 'GET', '/api/api-key')).json as unknown as Array<{ id: number; last_used_at: string | null }>;
        return keys.find((k) => k.id === createdId)?.last_used_at != null;
      }),
      'last_used_at of a key used only through the workers stayed null',
    );
  });

  await t.test('a deleted key is refused by every worker as soon as the API answers', async () => {
    const ready = await openConnections(kg.proxy, 24);
    assert.equal((await admin(kg.admin, 'DELETE', `/api/api-key/${createdId}`)).status, 204);
    assert.deepEqual([...new Set(await sendOnEach(ready, created))], [401], 'a worker admitted the deleted key after the API answered');
    const seen = await many(kg.proxy, created);
    assert.deepEqual([...seen.statuses], [401], 'a worker still admitted the deleted key');
  });

  await t.test('a file edit is enforced by every worker', async () => {
    const next = config(up.url, `    - name: From the file\n      group: all-users\n      key: ${FILE_KEY}\n`);
    dir.rewrite(next);
    assert.ok(await eventually(async () => ((await admin(kg.admin, 'GET', '/status')).json.applied as { sha256: string }).sha256 === sha256(next)));
    assert.ok(
      await eventually(async () => {
        const seen = await many(kg.proxy, FILE_KEY, 20);
        return seen.statuses.size === 1 && seen.statuses.has(200) && seen.workers.size === 2;
      }),
      'the key from the file was never admitted by both workers',
    );
  });

  await t.test('/metrics counts the requests of both workers', async () => {
    const text = await (await fetch(`${kg.admin}/metrics`)).text();
    const m = /^keygate_requests_total\{outcome="forwarded",status="200"\} (\d+)$/m.exec(text);
    assert.ok(m !== null, text.slice(0, 500));
    assert.ok(Number(m[1]) >= 100, `forwarded requests counted: ${m[1]}`);
    assert.match(text, /^keygate_keys\{source="config"\} 2$/m);
    assert.match(text, /^keygate_store_reachable 1$/m);
  });

  await t.test('a worker that dies is replaced, and serving goes on', async () => {
    const before = ((await admin(kg.admin, 'GET', '/status')).json.workers as Array<{ pid: number }>).map((w) => w.pid);
    // Requests on new connections all through the replacement: the new worker takes none before it has the keys.
    // (0: no answer, a connection lost with the dead worker; only a 401 would be the new worker's doing.)
    const during = new Set<number>();
    let replaced = false;
    const traffic = (async () => {
      for (let i = 0; !replaced || i < 40; i++) during.add((await once(kg.proxy, `/r/${i}`, FILE_KEY).catch(() => ({ status: 0 }))).status);
    })();
    process.kill(before[0] as number, 'SIGKILL');
    assert.ok(
      await eventually(async () => {
        const now = ((await admin(kg.admin, 'GET', '/status')).json.workers as Array<{ pid: number; feed_seq: number | null }>);
        return now.length === 2 && !now.some((w) => w.pid === before[0]) && now.every((w) => w.feed_seq !== null);
      }),
      'no new worker took the dead one\'s place',
    );
    replaced = true;
    await traffic;
    assert.ok(!during.has(401), `a valid key was refused during the replacement: ${[...during].join(', ')}`);
    const seen = await many(kg.proxy, FILE_KEY, 20);
    assert.deepEqual([...seen.statuses], [200]);
    assert.match(kg.stderr(), /serving worker died: starting another/);
  });

  await t.test('SIGTERM lets a request in flight on a worker finish, stops every worker, and exits 0', async () => {
    const inflight = once(kg.proxy, '/slow', FILE_KEY);
    assert.ok(await eventually(() => release !== null), 'the slow request never reached the upstream');
    const pids = ((await admin(kg.admin, 'GET', '/status')).json.workers as Array<{ pid: number }>).map((w) => w.pid);
    kg.child.kill('SIGTERM');
    // The request is still waiting for the upstream when shutdown begins: shutdown waits for it.
    assert.ok(await eventually(() => /"msg":"shutting down"/.test(kg.stderr())));
    (release as (() => void) | null)?.();
    assert.equal((await inflight).status, 200);
    assert.equal(await kg.exited, 0);
    for (const pid of pids) assert.throws(() => process.kill(pid, 0), { code: 'ESRCH' }, `worker ${pid} is still running`);
  });
});
