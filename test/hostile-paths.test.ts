/**
 * Hostile input, part 3: path and header tricks against `allow` rules.
 *
 * A real `keygate serve` sits in front of a real upstream that records every
 * request it receives. Each trick is sent over a raw socket (bytes exactly as
 * written, no client-side normalisation). Whatever keygate answers, the
 * assertion is on what the upstream saw: nothing may arrive there that the
 * key may not call, under the strictest reading of the path (as keygate reads
 * it) and under the most lenient one common upstream servers apply (one
 * percent-decoding, `\` as `/`, `;params` stripped from each segment, dot
 * segments resolved, as Tomcat/Spring and older Jetty do). Every request that
 * reaches the upstream must also carry keygate's identity headers: one that
 * does not went around the proxy's checks.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { tempConfig } from './helpers/tmp.ts';
import { startServe, startUpstream, type SeenRequest, type Upstream } from './helpers/serve.ts';
import { call, rawConversation, rawRequest, type RawAnswer } from './helpers/hostile.ts';

const READER_KEY = 'kg_hostile_reader_9aQ3xW7mZp2LkR5t';
const NARROW_KEY = 'kg_hostile_narrow_4Hd8sJ1vYc6NbE0u';
const ADMIN_KEY = 'kg_hostile_admin_7Tg2fK9pLm3QwX5z';

function config(upstream: string): string {
  return `version: 1
config:
  keygate:
    upstream: ${upstream}
    failed_auth_per_minute: 1000000
    upstream_timeout_ms: 2000
  groups:
    - name: readers
      allow:
        - methods: [GET, HEAD]
          paths: ["/api/card/**", "/public/*"]
  api-keys:
    - name: reader
      group: readers
      key: ${READER_KEY}
    - name: narrow
      group: readers
      key: ${NARROW_KEY}
      allow:
        - paths: ["/api/card/1"]
    - name: admin
      group: admin
      key: ${ADMIN_KEY}
`;
}

/** What the reader and narrow keys may call, as segment lists. */
const MAY: Record<string, (segments: readonly string[]) => boolean> = {
  reader: (s) => (s[0] === 'api' && s[1] === 'card') || (s[0] === 'public' && s.length === 2),
  narrow: (s) => s.length === 3 && s[0] === 'api' && s[1] === 'card' && s[2] === '1',
};

/** The path as keygate's rules read it: split on `/`, empty segments dropped. */
function strictSegments(url: string): string[] {
  const path = url.split('?')[0] ?? '';
  return path.split('/').filter((s) => s !== '');
}

/** The path as a lenient upstream reads it (Tomcat, Spring, older Jetty, IIS-like servers). */
function lenientSegments(url: string): string[] {
  let path = url.split('?')[0] ?? '';
  try {
    path = decodeURIComponent(path);
  } catch {
    // a malformed escape stays as it is
  }
  path = path.replace(/\\/g, '/');
  const out: string[] = [];
  for (const part of path.split('/')) {
    const seg = part.split(';')[0] ?? '';
    if (seg === '' || seg === '.') continue;
    if (seg === '..') {
      out.pop();
      continue;
    }
    out.push(seg);
  }
  return out;
}

/** Why `seen` should never have reached the upstream, or null when it is a request the key may make. */
function violation(seen: SeenRequest): string | null {
  const name = seen.headers['x-api-key-name'];
  if (name === undefined) return `reached the upstream without identity headers (went around keygate): ${seen.method} ${seen.url}`;
  if (!String(seen.headers.via ?? '').includes('keygate')) return `reached the upstream without keygate's via: ${seen.method} ${seen.url}`;
  if (name === 'admin') return null;
  const may = MAY[String(name)];
  if (may === undefined) return `unexpected identity ${String(name)}`;
  if (seen.method !== 'GET' && seen.method !== 'HEAD') return `method ${seen.method} forwarded for ${String(name)}`;
  if (!may(strictSegments(seen.url))) return `path ${seen.url} forwarded for ${String(name)} (not allowed as keygate reads it)`;
  const lenient = lenientSegments(seen.url);
  if (!may(lenient)) return `path ${seen.url} forwarded for ${String(name)}: a lenient upstream reads it as /${lenient.join('/')}, which the key may not call`;
  return null;
}

interface Env {
  proxy: string;
  up: Upstream;
  evilConnections: () => number;
}

async function setup(t: TestContext): Promise<Env> {
  const up = await startUpstream(t);
  // A server that must never be contacted: absolute-form targets and Host headers point at it.
  let evil = 0;
  const evilServer = net.createServer((s) => {
    evil++;
    s.destroy();
  });
  await new Promise<void>((resolve) => evilServer.listen(0, '127.0.0.1', () => resolve()));
  t.after(() => new Promise<void>((resolve) => evilServer.close(() => resolve())));
  const dir = tempConfig(t, config(up.url));
  const kg = await startServe(t, dir.config, { args: ['--db', dir.db] });
  EVIL_PORT = (evilServer.address() as net.AddressInfo).port;
  return { proxy: kg.proxy, up, evilConnections: () => evil };
}

let EVIL_PORT = 0;

const req = (target: string, headers: string[] = [], method = 'GET'): string =>
  `${method} ${target} HTTP/1.1\r\nHost: gateway.test\r\n${headers.map((h) => `${h}\r\n`).join('')}Connection: close\r\n\r\n`;
const withKey = (target: string, key = READER_KEY, headers: string[] = [], method = 'GET'): string =>
  req(target, [`x-api-key: ${key}`, ...headers], method);

/** Sends `bytes`, then checks everything the upstream received meanwhile. */
async function probe(env: Env, label: string, bytes: string | string[], opts: { responses?: number; timeoutMs?: number } = {}): Promise<{ answer: RawAnswer; seen: SeenRequest[] }> {
  const before = env.up.seen.length;
  const evilBefore = env.evilConnections();
  const answer = await rawRequest(env.proxy, bytes, { timeoutMs: opts.timeoutMs ?? 3000, ...(opts.responses !== undefined ? { responses: opts.responses } : {}) });
  // Anything smuggled behind the first request needs a moment to reach the upstream.
  await new Promise((r) => setTimeout(r, 15));
  const seen = env.up.seen.slice(before);
  for (const s of seen) {
    const why = violation(s);
    assert.equal(why, null, `${label}: ${why ?? ''}\nkeygate answered: ${answer.statuses.join(', ') || '(nothing)'}`);
  }
  assert.equal(env.evilConnections(), evilBefore, `${label}: keygate connected to a host named by the client`);
  return { answer, seen };
}

/** A refusal: no 2xx answer and nothing forwarded. */
function assertRefused(label: string, r: { answer: RawAnswer; seen: SeenRequest[] }, statuses: readonly number[] = [400, 401, 403, 404, 431]): void {
  assert.equal(r.seen.length, 0, `${label}: forwarded ${r.seen.map((s) => s.url).join(', ')}`);
  for (const s of r.answer.statuses) assert.ok(statuses.includes(s), `${label}: answered ${s}, expected one of ${statuses.join('/')}`);
}

async function pathTricks(t: TestContext, env: Env): Promise<void> {

  await t.test('the oracle itself: an honest request is forwarded and passes the checks', async () => {
    const r = await probe(env, 'honest', withKey('/api/card/7?x=1'));
    assert.deepEqual(r.answer.statuses, [200]);
    assert.deepEqual(r.seen.map((s) => s.url), ['/api/card/7?x=1']);
  });

  const escapes: Array<[string, string]> = [
    ['dot-dot', '/api/card/../admin'],
    ['dot-dot twice', '/api/card/../../admin/users'],
    ['dot then dot-dot', '/api/card/./../admin'],
    ['trailing dot-dot', '/api/card/1/../..'],
    ['encoded dot-dot (lower)', '/api/card/%2e%2e/admin'],
    ['encoded dot-dot (upper)', '/api/card/%2E%2E/%2E%2E/admin'],
    ['half-encoded dot-dot', '/api/card/.%2e/admin'],
    ['half-encoded dot-dot (2)', '/api/card/%2e./admin'],
    ['double-encoded dot-dot', '/api/card/%252e%252e/%252e%252e/admin'],
    ['encoded slash', '/api/card%2f..%2f..%2fadmin'],
    ['encoded slash (upper)', '/api/card/..%2Fadmin'],
    ['encoded slashes only', '/api/card/%2f%2fadmin'],
    ['encoded backslash', '/api/card/..%5cadmin'],
    ['encoded backslash (upper)', '/api/card/..%5C..%5Cadmin'],
    ['backslash', '/api/card/..\\admin'],
    ['backslashes', '/api/card\\..\\..\\admin'],
    ['double slash start', '//admin'],
    ['triple slash start', '///admin/users'],
    ['double slash then dot-dot', '/api//card/../../admin'],
    ['dot-dot above the root', '/../../etc/passwd'],
    ['encoded dot-dot above the root', '/%2e%2e/%2e%2e/etc/passwd'],
    ['semicolon then dot-dot', '/api/card/1;/../../admin'],
    ['matrix parameter on a segment', '/api/card;x=1/../../admin'],
    ['semicolon on the first segment', '/api;/admin'],
    ['Tomcat ..; segment', '/api/card/..;/..;/admin'],
    ['Tomcat ..; segment with parameter', '/api/card/..;x=y/..;x=y/admin'],
    ['encoded ..; segment', '/api/card/%2e%2e;/%2e%2e;/admin'],
    ['.; segment then dot-dot', '/api/card/.;/../../admin'],
    ['..; under /public', '/public/..;'],
    ['upper-case prefix', '/API/card/1'],
    ['mixed-case prefix', '/Api/Card/1'],
    ['upper-case admin via dot-dot', '/api/card/%2E%2E/%2E%2E/ADMIN'],
    ['IIS %u escapes', '/api/card/%u002e%u002e/admin'],
    ['NUL escape', '/api/card/%00/../../admin'],
    ['NUL at the end', '/api/card/1%00'],
    ['malformed escape', '/api/card/%zz'],
    ['truncated escape', '/api/card/%2'],
    ['dot-dot in the query', '/api/card/1?/../../admin'],
    ['encoded question mark', '/api/card/1%3f/../../admin'],
    ['encoded hash', '/api/card/1%23/../../admin'],
    ['fragment', '/api/card/1#/../../admin'],
    ['non-ASCII byte', '/api/card/\u00ff/../../admin'],
    ['overlong UTF-8 dot', '/api/card/%c0%ae%c0%ae/admin'],
    ['tab in the path', '/api/card/1\t/../../admin'],
    ['no leading slash', 'api/card/1'],
    ['asterisk-form', '*'],
  ];
  for (const [label, target] of escapes) {
    await t.test(`${label}: ${JSON.stringify(target)}`, async () => {
      const r = await probe(env, label, withKey(target));
      if (r.seen.length === 0) {
        assert.ok(r.answer.statuses.length <= 1, `${label}: several answers ${r.answer.statuses.join(', ')}`);
        for (const s of r.answer.statuses) assert.ok([400, 403, 404, 431].includes(s), `${label}: refused with ${s}`);
      } else {
        assert.deepEqual(r.answer.statuses, [200], `${label}: forwarded, so the upstream's 200 comes back`);
      }
    });
  }

  await t.test('long and adversarial paths are answered, and the answer is right (no backtracking blow-up)', async () => {
    // A run of letters followed by a character outside the old fast-path expression's class made it
    // backtrack exponentially: the first took 6.6 s, and 60 letters would take longer than anyone waits.
    // Meanwhile, every other client waited too. The client timeouts below are hang guards only.
    const cases: Array<[string, number]> = [
      ['/api/card/quarterly_revenue_report.json', 200],
      [`/api/card/${'quarterly_revenue_report_'.repeat(3)}x.json`, 200],
      [`/api/card/${'a'.repeat(4000)}"`, 200],
      [`/api/card/${'a'.repeat(200)}%41`, 200],
      [`/api/card/${'x/'.repeat(3000)}end.json`, 200],
      [`/api/card/${'./'.repeat(2000)}dots`, 200],
      [`/api/admin/${'a'.repeat(100)}.json`, 403],
      [`/api/card/${'a'.repeat(9000)}.json`, 414],
    ];
    const answers = await Promise.all(
      cases.map(([path]) => call(env.proxy, path, { headers: { 'x-api-key': READER_KEY }, timeoutMs: 60_000 })),
    );
    // An ordinary request sent while those run is answered too.
    const other = await call(env.proxy, '/api/card/5', { headers: { 'x-api-key': READER_KEY }, timeoutMs: 60_000 });
    assert.equal(other.status, 200);
    cases.forEach(([path, status], i) => {
      const a = answers[i] as { status: number; text: string };
      assert.equal(a.status, status, `${path.slice(0, 60)}… (${path.length} characters): ${a.text.slice(0, 200)}`);
      if (status === 414) assert.equal((JSON.parse(a.text) as { error: string }).error, 'uri_too_long');
    });
    const seen = env.up.seen.map((r) => r.url);
    assert.ok(seen.includes('/api/card/quarterly_revenue_report.json'));
    assert.ok(seen.includes('/api/card/dots'), 'the dot segments were resolved before forwarding');
    assert.ok(!seen.some((u) => u.startsWith('/api/admin/')), 'a forbidden long path reached the upstream');
  });

  await t.test('a key narrowed to /api/card/1 reaches nothing else through the same tricks', async () => {
    for (const target of ['/api/card/1/../2', '/api/card/1/..;/2', '/api/card/%31/../2', '/api/card/1;/../2', '//api/card/2', '/api/card/1/.', '/api/card/1%2f..%2f2']) {
      const r = await probe(env, `narrow ${target}`, withKey(target, NARROW_KEY));
      for (const s of r.seen) assert.deepEqual(strictSegments(s.url), ['api', 'card', '1'], `narrow ${target} forwarded as ${s.url}`);
    }
    const ok = await probe(env, 'narrow /api/card/./1', withKey('/api//card/./%31', NARROW_KEY));
    assert.deepEqual(ok.seen.map((s) => s.url), ['/api/card/1'], 'normalised to the path that was checked');
  });

  await t.test('methods: only GET and HEAD pass for readers, in any spelling', async () => {
    for (const method of ['POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'TRACE', 'get', 'Get', 'PROPFIND']) {
      const r = await probe(env, `method ${method}`, withKey('/api/card/1', READER_KEY, [], method));
      assertRefused(`method ${method}`, r);
    }
    const head = await probe(env, 'HEAD', withKey('/api/card/1', READER_KEY, [], 'HEAD'));
    assert.deepEqual(head.answer.statuses, [200]);
  });
}

async function elsewhereTargets(t: TestContext, env: Env): Promise<void> {
  const upHost = new URL(env.up.url).host;

  await t.test('absolute-form request targets are refused (never forwarded to the named host, nor to the upstream)', async () => {
    for (const target of [
      'http://evil.example/admin',
      `http://127.0.0.1:${EVIL_PORT}/api/card/1`,
      `http://${upHost}/admin`,
      `http://${upHost}/api/card/1`,
      'https://evil.example:443/api/card/1',
      `http://gateway.test@127.0.0.1:${EVIL_PORT}/api/card/1`,
    ]) {
      const r = await probe(env, `absolute ${target}`, withKey(target));
      assertRefused(`absolute ${target}`, r);
    }
  });

  await t.test('a Host header naming another server changes nothing about where the request goes', async () => {
    const r = await probe(env, 'host elsewhere', `GET /api/card/1 HTTP/1.1\r\nHost: 127.0.0.1:${EVIL_PORT}\r\nx-api-key: ${READER_KEY}\r\nConnection: close\r\n\r\n`);
    assert.deepEqual(r.answer.statuses, [200]);
    assert.deepEqual(r.seen.map((s) => s.url), ['/api/card/1']);
    const dup = await probe(env, 'two Host headers', `GET /api/card/1 HTTP/1.1\r\nHost: gateway.test\r\nHost: 127.0.0.1:${EVIL_PORT}\r\nx-api-key: ${READER_KEY}\r\nConnection: close\r\n\r\n`);
    for (const s of dup.seen) assert.equal(s.url, '/api/card/1');
    const forwardedHost = await probe(
      env,
      'x-forwarded-host elsewhere',
      withKey('/api/card/1', READER_KEY, [`X-Forwarded-Host: 127.0.0.1:${EVIL_PORT}`, 'X-Original-URL: /admin', 'X-Rewrite-URL: /admin']),
    );
    assert.deepEqual(forwardedHost.answer.statuses, [200]);
    // An untrusted peer's X-Forwarded-Host is replaced by the Host it really sent.
    assert.equal(forwardedHost.seen[0]?.headers['x-forwarded-host'], 'gateway.test');
  });

  await t.test('CONNECT is refused and opens no tunnel', async () => {
    const r = await probe(env, 'CONNECT', `CONNECT 127.0.0.1:${EVIL_PORT} HTTP/1.1\r\nHost: 127.0.0.1:${EVIL_PORT}\r\nx-api-key: ${ADMIN_KEY}\r\n\r\n`, { timeoutMs: 1500 });
    assert.equal(r.seen.length, 0);
    for (const s of r.answer.statuses) assert.ok(s >= 400, `CONNECT answered ${s}`);
  });
}

async function keyPlacement(t: TestContext, env: Env): Promise<void> {
  const cases: Array<[string, string]> = [
    ['?x-api-key=', withKey('/api/card/1').replace(`x-api-key: ${READER_KEY}\r\n`, '').replace('/api/card/1', `/api/card/1?x-api-key=${READER_KEY}`)],
    ['?api_key=', req(`/api/card/1?api_key=${READER_KEY}`)],
    ['?apikey=', req(`/api/card/1?apikey=${READER_KEY}`)],
    ['?key=', req(`/api/card/1?key=${READER_KEY}`)],
    ['?access_token=', req(`/api/card/1?access_token=${READER_KEY}`)],
    [';x-api-key= path parameter', req(`/api/card/1;x-api-key=${READER_KEY}`)],
    ['Authorization: Bearer', req('/api/card/1', [`Authorization: Bearer ${READER_KEY}`])],
    ['Authorization: ApiKey', req('/api/card/1', [`Authorization: ApiKey ${READER_KEY}`])],
    ['Cookie', req('/api/card/1', [`Cookie: x-api-key=${READER_KEY}`])],
    ['x-api_key (underscore)', req('/api/card/1', [`x-api_key: ${READER_KEY}`])],
    ['x-apikey', req('/api/card/1', [`x-apikey: ${READER_KEY}`])],
  ];
  for (const [label, bytes] of cases) {
    await t.test(`a key in ${label} is not accepted (401)`, async () => {
      const r = await probe(env, label, bytes);
      assertRefused(label, r, [401]);
      assert.deepEqual(r.answer.statuses, [401], label);
      assert.match(r.answer.text, /"error":"missing_api_key"/);
    });
  }
  await t.test('a key sent in a chunked trailer is not accepted (401)', async () => {
    const bytes = `GET /api/card/1 HTTP/1.1\r\nHost: gateway.test\r\nTransfer-Encoding: chunked\r\nTrailer: x-api-key\r\nConnection: close\r\n\r\n0\r\nx-api-key: ${READER_KEY}\r\n\r\n`;
    const r = await probe(env, 'trailer', bytes);
    assertRefused('trailer', r, [401]);
  });
}

async function headerTricks(t: TestContext, env: Env): Promise<void> {
  const refusedCases: Array<[string, string, number[]]> = [
    ['the key header twice (same value)', req('/api/card/1', [`x-api-key: ${READER_KEY}`, `x-api-key: ${READER_KEY}`]), [400]],
    ['the key header twice (reader then admin)', req('/admin', [`x-api-key: ${READER_KEY}`, `x-api-key: ${ADMIN_KEY}`]), [400]],
    ['the key header twice in different case', req('/admin', [`X-API-KEY: ${ADMIN_KEY}`, `x-api-key: ${READER_KEY}`]), [400]],
    ['two keys in one header, comma-space', req('/admin', [`x-api-key: ${READER_KEY}, ${ADMIN_KEY}`]), [400]],
    ['two keys in one header, comma only', req('/admin', [`x-api-key: ${READER_KEY},${ADMIN_KEY}`]), [401]],
    ['a key with a space before the colon', req('/admin', [`x-api-key : ${ADMIN_KEY}`]), [400]],
    ['a key folded over two lines (obs-fold)', req('/admin', [`x-api-key: ${ADMIN_KEY.slice(0, 10)}`, ` ${ADMIN_KEY.slice(10)}`]), [400, 401]],
    ['a key with a NUL byte', req('/admin', [`x-api-key: ${ADMIN_KEY}\u0000`]), [400, 401]],
    ['a key with a bare CR', req('/admin', [`x-api-key: ${ADMIN_KEY}\rX-Other: 1`]), [400, 401]],
    ['an empty key header', req('/admin', ['x-api-key: ']), [401]],
    ['a 15 kB key value', req('/admin', [`x-api-key: ${'k'.repeat(15_000)}`]), [401]],
    ['a 40 kB header', req('/api/card/1', [`x-api-key: ${READER_KEY}`, `X-Big: ${'b'.repeat(40_000)}`]), [400, 431]],
    ['a 1 MB header block', req('/api/card/1', [`x-api-key: ${READER_KEY}`, ...Array.from({ length: 1000 }, (_, i) => `X-Filler-${i}: ${'f'.repeat(1000)}`)]), [400, 431]],
    ['a header name with a space', req('/admin', ['X Api Key: x', `x-api-key: ${READER_KEY}`]), [400, 403]],
    ['a header line without a colon', req('/admin', ['garbage-line', `x-api-key: ${READER_KEY}`]), [400, 403]],
    ['HTTP/1.0 with two keys', `GET /admin HTTP/1.0\r\nx-api-key: ${READER_KEY}\r\nx-api-key: ${ADMIN_KEY}\r\n\r\n`, [400]],
    ['HTTP/0.9', 'GET /admin\r\n\r\n', [400, 401]],
    ['HTTP/2 preface on HTTP/1', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', [400, 505]],
    ['HTTP/3.0 version', `GET /admin HTTP/3.0\r\nx-api-key: ${READER_KEY}\r\n\r\n`, [400, 403, 505]],
  ];
  for (const [label, bytes, statuses] of refusedCases) {
    await t.test(label, async () => {
      const r = await probe(env, label, bytes);
      assertRefused(label, r, statuses);
    });
  }

  await t.test('an oversized header block is answered 431, not as a path problem', async () => {
    // Refused either way; but a client (or an operator reading the logs) is told the truth:
    // RFC 6585's 431 Request Header Fields Too Large, as Node, nginx and Traefik answer.
    const r = await probe(env, '431', req('/api/card/1', [`x-api-key: ${READER_KEY}`, `X-Big: ${'b'.repeat(40_000)}`]));
    assert.equal(r.seen.length, 0);
    assert.deepEqual(r.answer.statuses, [431], `answered ${r.answer.text.split('\r\n')[0] ?? ''}: ${r.answer.text.slice(r.answer.text.indexOf('{'))}`);
  });

  await t.test('2,000 filler headers cannot hide a second key or push the key out of sight', async () => {
    const filler = Array.from({ length: 2100 }, (_, i) => `a${i}: 1`);
    for (const [label, headers] of [
      ['key after the filler', [...filler, `x-api-key: ${ADMIN_KEY}`]],
      ['reader key first, admin key after the filler', [`x-api-key: ${READER_KEY}`, ...filler, `x-api-key: ${ADMIN_KEY}`]],
    ] as const) {
      const r = await probe(env, label, req('/admin', [...headers]));
      assertRefused(label, r, [400, 401, 403, 431]);
    }
  });

  await t.test('identity headers sent by the client are replaced, whatever their spelling', async () => {
    const r = await probe(
      env,
      'identity spoofing',
      withKey('/api/card/1', READER_KEY, ['X-Api-Key-Group: admin', 'x-api-key-name: admin', 'X-API-KEY-ID: 1', 'x-api-key-group: admin']),
    );
    assert.deepEqual(r.answer.statuses, [200]);
    const seen = r.seen[0];
    assert.ok(seen);
    assert.equal(seen.headers['x-api-key-group'], 'readers');
    assert.equal(seen.headers['x-api-key-name'], 'reader');
    assert.equal(seen.rawHeaders.filter((h) => h.toLowerCase() === 'x-api-key-group').length, 1);
  });

  await t.test('underscore spellings, Forwarded and URL overrides never reach the upstream as the client sent them', async () => {
    // CGI-style servers map x_api_key_group and x-api-key-group to the same variable; IIS and
    // Symfony route on X-Original-URL / X-Rewrite-URL; Forwarded is read like X-Forwarded-*.
    const r = await probe(
      env,
      'header spoofing',
      withKey('/api/card/1', READER_KEY, [
        'x_api_key_group: admin',
        'X_Api_Key_Name: admin',
        'x_api_key_id: 1',
        `x_api_key: ${ADMIN_KEY}`,
        'X_Forwarded_For: 6.6.6.6',
        'Forwarded: for=6.6.6.6;proto=https;host=admin.internal',
        'forwarded: for=7.7.7.7',
        'X-Forwarded-Prefix: /admin',
        'X-Forwarded-Port: 443',
        'X-Original-URL: /admin/settings',
        'x-rewrite-url: /admin/settings',
        'X_Original_URL: /admin/settings',
        'x_http_method_override: DELETE',
        'X-Real-IP: 6.6.6.6',
        'True-Client-IP: 6.6.6.6',
        'x_custom_header: kept',
      ]),
    );
    assert.deepEqual(r.answer.statuses, [200]);
    const seen = r.seen[0];
    assert.ok(seen);
    const names = seen.rawHeaders.filter((_h, i) => i % 2 === 0).map((h) => h.toLowerCase());
    for (const dropped of ['x_api_key_group', 'x_api_key_name', 'x_api_key_id', 'x_api_key', 'x_forwarded_for', 'x-forwarded-prefix', 'x-forwarded-port', 'x-original-url', 'x-rewrite-url', 'x_original_url', 'x_http_method_override', 'x-real-ip', 'true-client-ip']) {
      assert.ok(!names.includes(dropped), `${dropped} reached the upstream`);
    }
    assert.ok(names.includes('x_custom_header'), 'other underscore headers pass through');
    assert.equal(names.filter((n) => n === 'forwarded').length, 1);
    assert.equal(seen.headers.forwarded, 'for=127.0.0.1;proto=http;host=gateway.test', 'the client\'s Forwarded was replaced by keygate\'s own');
    assert.equal(seen.headers['x-api-key-group'], 'readers');
    assert.ok(!JSON.stringify(seen.rawHeaders).includes(ADMIN_KEY), 'the underscore key header reached the upstream');
  });
}

async function smugglingShapes(t: TestContext, env: Env): Promise<void> {
  const smuggled = 'GET /admin/smuggled HTTP/1.1\r\nHost: gateway.test\r\n\r\n';
  const head = (extra: string[]): string =>
    `GET /api/card/1 HTTP/1.1\r\nHost: gateway.test\r\nx-api-key: ${READER_KEY}\r\n${extra.map((h) => `${h}\r\n`).join('')}\r\n`;
  const chunkedSmuggle = `0\r\n\r\n${smuggled}`;
  const shapes: Array<[string, string]> = [
    ['CL.TE: Content-Length and chunked together', head([`Content-Length: ${chunkedSmuggle.length}`, 'Transfer-Encoding: chunked']) + chunkedSmuggle],
    ['TE.CL: chunked then Content-Length', head(['Transfer-Encoding: chunked', 'Content-Length: 4']) + chunkedSmuggle],
    ['TE with a space before the colon', head(['Transfer-Encoding : chunked', `Content-Length: ${chunkedSmuggle.length}`]) + chunkedSmuggle],
    ['TE xchunked', head(['Transfer-Encoding: xchunked', `Content-Length: ${chunkedSmuggle.length}`]) + chunkedSmuggle],
    ['TE chunked, identity', head(['Transfer-Encoding: chunked, identity', 'Content-Length: 3']) + chunkedSmuggle],
    ['TE twice (chunked, identity)', head(['Transfer-Encoding: chunked', 'Transfer-Encoding: identity']) + chunkedSmuggle],
    ['TE with a tab', head(['Transfer-Encoding:\tchunked', 'Content-Length: 3']) + chunkedSmuggle],
    ['TE on a folded line', head(['Transfer-Encoding:', ' chunked', 'Content-Length: 3']) + chunkedSmuggle],
    ['TE in upper case with CL', head(['TRANSFER-ENCODING: CHUNKED', `Content-Length: ${chunkedSmuggle.length}`]) + chunkedSmuggle],
    ['two different Content-Lengths', head(['Content-Length: 0', `Content-Length: ${smuggled.length}`]) + smuggled],
    ['Content-Length with a plus sign', head([`Content-Length: +${smuggled.length}`]) + smuggled],
    ['Content-Length as a list', head([`Content-Length: 0, ${smuggled.length}`]) + smuggled],
    ['negative Content-Length', head(['Content-Length: -1']) + smuggled],
    ['chunk size with a trailing junk', head(['Transfer-Encoding: chunked']) + `5x\r\nhello\r\n0\r\n\r\n${smuggled}`],
    ['chunk size overflow', head(['Transfer-Encoding: chunked']) + `ffffffffffffffffff\r\nhello\r\n0\r\n\r\n${smuggled}`],
    ['bare LF line endings', `GET /api/card/1 HTTP/1.1\nHost: gateway.test\nx-api-key: ${READER_KEY}\nContent-Length: ${smuggled.length}\n\n${smuggled}`],
  ];

  await t.test('two Host headers: 400 malformed_request, nothing reaches the upstream', async () => {
    const r = await probe(env, 'two Host headers', `GET /api/card/1 HTTP/1.1\r\nHost: gateway.test\r\nHost: internal-admin.test\r\nx-api-key: ${READER_KEY}\r\nConnection: close\r\n\r\n`);
    assert.deepEqual(r.answer.statuses, [400]);
    assert.match(r.answer.text, /"error":\s*"malformed_request"/);
    assert.deepEqual(r.seen, []);
  });
  for (const [label, bytes] of shapes) {
    await t.test(label, async () => {
      const r = await probe(env, label, bytes, { timeoutMs: 700, responses: 2 });
      assert.ok(!r.seen.some((s) => s.url.includes('smuggled')), `${label}: the smuggled request reached the upstream`);
    });
  }

  await t.test('a body that looks like a request is forwarded as a body, never as a request', async () => {
    const r = await probe(env, 'request-shaped body', head([`Content-Length: ${smuggled.length}`, 'Connection: close']) + smuggled);
    assert.deepEqual(r.answer.statuses, [200]);
    assert.deepEqual(r.seen.map((s) => s.url), ['/api/card/1']);
  });

  await t.test('pipelined requests are each authenticated and authorised on their own', async () => {
    const bytes = [
      head([]),
      'GET /admin/no-key HTTP/1.1\r\nHost: gateway.test\r\n\r\n',
      `GET /admin/reader-key HTTP/1.1\r\nHost: gateway.test\r\nx-api-key: ${READER_KEY}\r\n\r\n`,
      `GET /api/card/2 HTTP/1.1\r\nHost: gateway.test\r\nx-api-key: ${NARROW_KEY}\r\n\r\n`,
      `GET /api/card/3 HTTP/1.1\r\nHost: gateway.test\r\nx-api-key: ${READER_KEY}\r\nConnection: close\r\n\r\n`,
    ].join('');
    const r = await probe(env, 'pipelined', bytes, { responses: 5 });
    assert.deepEqual(r.answer.statuses, [200, 401, 403, 403, 200]);
    // Node hands pipelined requests over as they are parsed: they may reach the upstream in either order.
    assert.deepEqual(r.seen.map((s) => s.url).sort(), ['/api/card/1', '/api/card/3']);
  });

  for (const [label, upgrade] of [
    ['websocket', ['Connection: Upgrade', 'Upgrade: websocket', 'Sec-WebSocket-Version: 13', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==']],
    ['h2c', ['Connection: Upgrade, HTTP2-Settings', 'Upgrade: h2c', 'HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA']],
  ] as const) {
    await t.test(`an Upgrade (${label}) that the upstream does not accept opens no raw tunnel to it`, async () => {
      // The upstream answers the upgrade request as a plain request (200, keep-alive), as
      // most HTTP servers do for a route without WebSocket support. If keygate tunnels the
      // bytes anyway, whatever the client sends next reaches the upstream unchecked.
      const before = env.up.seen.length;
      const answer = await rawConversation(env.proxy, [head([...upgrade]), 'GET /admin/through-tunnel HTTP/1.1\r\nHost: gateway.test\r\n\r\n']);
      await new Promise((r) => setTimeout(r, 30));
      const r = { answer, seen: env.up.seen.slice(before) };
      for (const s of r.seen) {
        const why = violation(s);
        assert.equal(why, null, `upgrade ${label}: ${why ?? ''}\nkeygate answered: ${answer.statuses.join(', ')}`);
      }
      assert.ok(
        !r.seen.some((s) => s.url.includes('through-tunnel')),
        `upgrade ${label}: a request sent after a refused upgrade went through the tunnel to the upstream unchecked`,
      );
    });
  }

  await t.test('an Upgrade to a path the key may not call is refused before any tunnel', async () => {
    const r = await probe(
      env,
      'upgrade to /admin',
      `GET /api/card/../../admin HTTP/1.1\r\nHost: gateway.test\r\nx-api-key: ${READER_KEY}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`,
    );
    assertRefused('upgrade to /admin', r, [403]);
  });

  await t.test('the proxy still answers normally afterwards', async () => {
    const r = await call(env.proxy, '/api/card/9', { headers: { 'x-api-key': READER_KEY } });
    assert.equal(r.status, 200);
  });
}

test('hostile paths and headers against a real keygate serve and a recording upstream', async (t) => {
  const env = await setup(t);
  await t.test('path tricks are refused or normalised; the upstream never sees a path the key may not call', (t) => pathTricks(t, env));
  await t.test('absolute-form targets, Host headers and CONNECT never send a request elsewhere', (t) => elsewhereTargets(t, env));
  await t.test('the key is only read from its header', (t) => keyPlacement(t, env));
  await t.test('duplicate, malformed and oversized headers are refused or read safely', (t) => headerTricks(t, env));
  await t.test('request smuggling shapes never get a second, unchecked request to the upstream', (t) => smugglingShapes(t, env));
});
