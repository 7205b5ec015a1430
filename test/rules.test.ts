import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { MAX_PATH_LENGTH, normalizeTarget } from '../src/rules/path.ts';
import { compileRules, patternProblem, rulesAllow } from '../src/rules/match.ts';
import { FailedAuthThrottle } from '../src/proxy/throttle.ts';
import {
  downstreamResponseHeaders,
  identityHeaders,
  isTrusted,
  readRequestHead,
  trustedProxyList,
  upstreamHeaders,
  type HeaderOptions,
} from '../src/proxy/headers.ts';

/** What the proxy sends upstream for these raw client headers: both steps, as server.ts runs them. */
const upstreamRequestHeaders = (raw: string[], identity: readonly string[], peer: string, trusted: boolean, opts: HeaderOptions): string[] =>
  upstreamHeaders(readRequestHead(raw, opts), identity, peer, trusted, opts.via);

const norm = (t: string): string | null => {
  const r = normalizeTarget(t);
  return r.ok ? r.path + r.query : null;
};

test('normalises paths: unreserved escapes decoded, dot segments resolved, slashes merged', () => {
  assert.equal(norm('/api/card/1'), '/api/card/1');
  assert.equal(norm('/api//card///1'), '/api/card/1');
  assert.equal(norm('/api/./card/1'), '/api/card/1');
  assert.equal(norm('/api/x/../card/1'), '/api/card/1');
  assert.equal(norm('/api/%63ard/%31'), '/api/card/1');
  assert.equal(norm('/api/card/%2e%2E/user'), '/api/user');
  assert.equal(norm('/api/card/a%20b'), '/api/card/a%20b');
  assert.equal(norm('/api/card/a%3fb'), '/api/card/a%3Fb');
  assert.equal(norm('/api/card/?q=../..'), '/api/card/?q=../..', 'the query is left alone');
  assert.equal(norm('/'), '/');
});

test('refuses paths that cannot be normalised safely', () => {
  for (const bad of [
    '/api/card/%2F1',
    '/api/card/%2f1',
    '/api/card/%5C1',
    '/api/%00',
    '/api/%zz',
    '/api/%4',
    '/api\\card',
    '/../etc/passwd',
    '/api/../../etc',
    '/%2e%2e/x',
    'http://evil.example/admin',
    '*',
    '',
    'api/card',
  ]) {
    assert.equal(normalizeTarget(bad).ok, false, bad);
  }
});

/**
 * The normaliser as the contract states it, written for clarity, not speed (regular
 * expressions are fine here: the inputs are short). The real one must agree with it.
 */
function referenceNormalize(target: string): { path: string; segments: string[] } | null {
  if (!target.startsWith('/')) return null;
  const path = target.split('?')[0] as string;
  if (/[^\x21-\x7e]|[\\#]/.test(path)) return null;
  if (/%(?![0-9A-Fa-f]{2})/.test(path)) return null;
  if (/%(2f|5c|00)/i.test(path)) return null;
  const decoded = path.replace(/%([0-9A-Fa-f]{2})/g, (_m, h: string) => {
    const c = String.fromCharCode(Number.parseInt(h, 16));
    return /[A-Za-z0-9\-._~]/.test(c) ? c : `%${h.toUpperCase()}`;
  });
  const parts = decoded.split('/').slice(1);
  const out: string[] = [];
  for (const seg of parts) {
    if (/^\.\.?;/.test(seg)) return null;
    if (seg === '' || seg === '.') continue;
    if (seg === '..') {
      if (out.length === 0) return null;
      out.pop();
    } else out.push(seg);
  }
  const last = parts[parts.length - 1];
  const slash = out.length > 0 && (decoded.length > 1 && decoded.endsWith('/') || last === '.' || last === '..');
  return { path: `/${out.join('/')}${slash ? '/' : ''}`, segments: out };
}

test('long and adversarial paths are normalised with the right result', () => {
  const word = 'quarterly_revenue_report';
  // The shape that made the old fast-path expression backtrack exponentially: a run of
  // "plain" characters followed by one outside its class.
  for (const tail of ['.json', '"', '%41', '^', '|x', '[', '%zz', ' ']) {
    for (const n of [1, 30, 200, 2000]) {
      const p = `/api/card/${word.repeat(n).slice(0, 4 * n + 20)}${tail}`;
      const ref = referenceNormalize(p);
      const r = normalizeTarget(p);
      assert.equal(r.ok, ref !== null, `${tail} × ${n}`);
      if (r.ok && ref !== null) {
        assert.equal(r.path, ref.path);
        assert.deepEqual(r.segments, ref.segments);
      }
    }
  }
  assert.equal(norm('/api/card/quarterly_revenue_report.json'), '/api/card/quarterly_revenue_report.json');
  // Thousands of segments, of every kind the slow path handles.
  const many = `/${Array.from({ length: 2000 }, (_, i) => ['a', '.', 'b', '..', '', '%61', 'c;x'][i % 7]).join('/')}`;
  const ref = referenceNormalize(many);
  const r = normalizeTarget(many);
  assert.ok(r.ok && ref !== null);
  assert.equal(r.path, ref.path);
  assert.equal(r.segments.length, ref.segments.length);
  const deep = `/${'x/'.repeat(4000)}`;
  const d = normalizeTarget(deep);
  assert.ok(d.ok);
  assert.equal(d.segments.length, 4000);
  assert.equal(d.path, deep);
  assert.equal(normalizeTarget(`/${'%2e%2e/'.repeat(100)}`).ok, false, 'climbs above the root');
  assert.equal(normalizeTarget(`/a/${'./'.repeat(4000)}b`).ok && norm(`/a/${'./'.repeat(4000)}b`), '/a/b');
});

test(`a path longer than ${MAX_PATH_LENGTH} characters is refused as too long; its query does not count`, () => {
  const at = `/${'a'.repeat(MAX_PATH_LENGTH - 1)}`;
  assert.equal(normalizeTarget(at).ok, true);
  assert.equal(normalizeTarget(`${at}?${'q'.repeat(20_000)}`).ok, true);
  const over = normalizeTarget(`${at}b`);
  assert.equal(over.ok, false);
  assert.equal(!over.ok && over.tooLong, true);
  const overSlow = normalizeTarget(`/${'%41'.repeat(MAX_PATH_LENGTH)}`);
  assert.equal(!overSlow.ok && overSlow.tooLong, true);
});

test('the normaliser agrees with the reference on random paths', () => {
  const piece = fc.constantFrom('a', 'Z', '9', '.', '..', '/', '//', '%2e', '%2E', '%41', '%7e', '%20', '%2f', '%5C', '%00', '%zz', '%4', ';', ';x', '~', '_', '-', '"', '\\', '#', ' ', '\u00e9', '@', ':', '*');
  fc.assert(
    fc.property(fc.array(piece, { maxLength: 40 }), fc.boolean(), (pieces, query) => {
      const target = `/${pieces.join('')}${query ? '?a=../b' : ''}`;
      const ref = referenceNormalize(target);
      const r = normalizeTarget(target);
      assert.equal(r.ok, ref !== null, target);
      if (r.ok && ref !== null) {
        assert.equal(r.path, ref.path, target);
        assert.deepEqual(r.segments, ref.segments, target);
        assert.equal(r.query, query ? '?a=../b' : '');
      }
    }),
    { numRuns: 5000 },
  );
});

test('matches * to one segment and ** to any number, with methods', () => {
  const rules = compileRules([
    { methods: ['GET', 'HEAD'], paths: ['/api/card/*', '/api/dashboard/**'] },
    { paths: ['/public'] },
  ]);
  const allows = (m: string, p: string): boolean => {
    const r = normalizeTarget(p);
    assert.ok(r.ok);
    return rulesAllow(rules, m, r.segments);
  };
  assert.equal(allows('GET', '/api/card/1'), true);
  assert.equal(allows('GET', '/api/card/1/query'), false, '* is one segment');
  assert.equal(allows('GET', '/api/card'), false, '* needs a segment');
  assert.equal(allows('POST', '/api/card/1'), false, 'method not allowed');
  assert.equal(allows('GET', '/api/dashboard'), true, '** matches zero segments');
  assert.equal(allows('GET', '/api/dashboard/1/cards/2'), true);
  assert.equal(allows('DELETE', '/public'), true, 'no methods: every method');
  assert.equal(allows('GET', '/public/x'), false);
  assert.equal(allows('GET', '/API/card/1'), false, 'matching is case-sensitive');
  assert.equal(allows('GET', '/api/card/1/../../user/1'), false);
});

/** `**` as the contract states it: every split tried (exponential in the number of `**`; fine on small inputs). */
function referenceMatch(p: readonly string[], s: readonly string[]): boolean {
  if (p.length === 0) return s.length === 0;
  const [head, ...rest] = p;
  if (head === '**') {
    for (let k = 0; k <= s.length; k++) if (referenceMatch(rest, s.slice(k))) return true;
    return false;
  }
  return s.length > 0 && (head === '*' || head === s[0]) && referenceMatch(rest, s.slice(1));
}

test('rules with several ** agree with the reference on random paths', () => {
  const seg = fc.constantFrom('a', 'b', 'c');
  const pat = fc.array(fc.constantFrom('a', 'b', '*', '**'), { maxLength: 7 });
  fc.assert(
    fc.property(pat, fc.array(seg, { maxLength: 10 }), (p, s) => {
      const rules = compileRules([{ paths: [`/${p.join('/')}`] }]);
      assert.equal(rulesAllow(rules, 'GET', s), referenceMatch(p, s), `/${p.join('/')} against /${s.join('/')}`);
    }),
    { numRuns: 5000 },
  );
});

test('a pattern with many ** against a path of thousands of segments gets the right answer', () => {
  const rules = compileRules([{ paths: ['/**/a/**/b/**/c/**/d'] }]);
  const segs = Array.from({ length: 4000 }, () => 'a');
  assert.equal(rulesAllow(rules, 'GET', segs), false);
  assert.equal(rulesAllow(rules, 'GET', [...segs, 'b', 'c', 'x', 'd']), true);
  assert.equal(rulesAllow(rules, 'GET', [...segs, 'b', 'c', 'x', 'd', 'e']), false);
  const star = compileRules([{ paths: ['/**/*/*/*/z'] }]);
  assert.equal(rulesAllow(star, 'GET', segs), false);
  assert.equal(rulesAllow(star, 'GET', [...segs, 'z']), true);
});

test('no rules allow everything; an empty list allows nothing', () => {
  assert.equal(rulesAllow(compileRules(null), 'GET', ['x']), true);
  assert.equal(rulesAllow(compileRules([]), 'GET', ['x']), false);
});

test('reports badly formed patterns', () => {
  assert.equal(patternProblem('/api/*'), null);
  assert.match(patternProblem('/api/card*') ?? '', /whole path segment/);
  assert.match(patternProblem('api') ?? '', /start with/);
  assert.match(patternProblem('/api/../x') ?? '', /"\."/);
});

test('the failed-auth bucket empties after N failures and refills over a minute', () => {
  const t = new FailedAuthThrottle(3);
  const now = 1_000_000;
  assert.equal(t.retryAfterSeconds('1.2.3.4', now), 0);
  t.fail('1.2.3.4', now);
  t.fail('1.2.3.4', now);
  assert.equal(t.retryAfterSeconds('1.2.3.4', now), 0);
  t.fail('1.2.3.4', now);
  assert.ok(t.retryAfterSeconds('1.2.3.4', now) >= 1, 'throttled after 3 failures');
  assert.equal(t.retryAfterSeconds('5.6.7.8', now), 0, 'other addresses are not affected');
  assert.equal(t.retryAfterSeconds('1.2.3.4', now + 20_001), 0, 'one token back after 20 s');
  t.sweep(now + 120_000);
  assert.equal(t.size, 0, 'full buckets are forgotten');
});

test('forwarded headers: untrusted peers are replaced, trusted proxies appended to', () => {
  const raw = ['X-HTTP-Method-Override', 'DELETE', 'Host', 'api.example', 'X-Forwarded-For', '6.6.6.6', 'X-Forwarded-Proto', 'https', 'X-Api-Key', 'secret', 'Connection', 'keep-alive, x-drop', 'X-Drop', '1', 'X-Api-Key-Group', 'admin'];
  const who = identityHeaders({ id: 7, name: 'bot', group: 'readers' });
  const opts = { keyHeader: 'x-api-key', forwardKey: false, via: '1.1 keygate-test' };
  const pairs = (h: string[]): Map<string, string> => {
    const m = new Map<string, string>();
    for (let i = 0; i < h.length; i += 2) m.set((h[i] as string).toLowerCase(), h[i + 1] as string);
    return m;
  };
  const untrusted = pairs(upstreamRequestHeaders(raw, who, '10.0.0.9', false, opts));
  assert.equal(untrusted.get('x-forwarded-for'), '10.0.0.9');
  assert.equal(untrusted.get('x-forwarded-proto'), 'http');
  assert.equal(untrusted.get('x-forwarded-host'), 'api.example');
  assert.equal(untrusted.has('x-api-key'), false);
  assert.equal(untrusted.has('connection'), false);
  assert.equal(untrusted.has('x-drop'), false, 'headers named in Connection are hop-by-hop');
  assert.equal(untrusted.get('x-api-key-group'), 'readers');
  assert.equal(untrusted.has('x-http-method-override'), false, 'method overrides are never forwarded');
  const list = trustedProxyList(['10.0.0.0/8']);
  assert.equal(isTrusted(list, '10.0.0.9'), true);
  assert.equal(isTrusted(list, '::ffff:10.0.0.9'), true);
  assert.equal(isTrusted(list, '11.0.0.1'), false);
  const trusted = pairs(upstreamRequestHeaders(raw, who, '10.0.0.9', true, opts));
  assert.equal(trusted.get('x-forwarded-for'), '6.6.6.6, 10.0.0.9');
  assert.equal(trusted.get('x-forwarded-proto'), 'https');
  const forwarded = pairs(upstreamRequestHeaders(raw, who, '10.0.0.9', false, { ...opts, forwardKey: true }));
  assert.equal(forwarded.get('x-api-key'), 'secret', 'forward_key keeps the key header');
  const names = pairs(upstreamRequestHeaders(raw, identityHeaders({ id: 7, name: 'clé ✓', group: 'readers' }), '10.0.0.9', false, opts));
  assert.equal(names.get('x-api-key-name'), encodeURIComponent('clé ✓'), 'names HTTP cannot carry are percent-encoded');
});

test('Forwarded is replaced for untrusted peers and appended to for trusted proxies, like X-Forwarded-For', () => {
  const raw = ['Host', 'api.example:8443', 'Forwarded', 'for=192.0.2.1;proto=https', 'Forwarded', 'for=192.0.2.2', 'X-Forwarded-Prefix', '/base', 'X-Forwarded-Port', '443'];
  const who = identityHeaders({ id: 7, name: 'bot', group: 'readers' });
  const opts = { keyHeader: 'x-api-key', forwardKey: false, via: '1.1 keygate-test' };
  const all = (h: string[], name: string): string[] => h.filter((_v, i) => i % 2 === 1 && (h[i - 1] as string).toLowerCase() === name);
  const untrusted = upstreamRequestHeaders(raw, who, '10.0.0.9', false, opts);
  assert.deepEqual(all(untrusted, 'forwarded'), ['for=10.0.0.9;proto=http;host="api.example:8443"']);
  assert.deepEqual(all(untrusted, 'x-forwarded-prefix'), [], 'other X-Forwarded-* from an untrusted peer are dropped');
  const trusted = upstreamRequestHeaders(raw, who, '10.0.0.9', true, opts);
  assert.deepEqual(all(trusted, 'forwarded'), ['for=192.0.2.1;proto=https, for=192.0.2.2, for=10.0.0.9;proto=http;host="api.example:8443"']);
  assert.deepEqual(all(trusted, 'x-forwarded-prefix'), ['/base']);
  assert.deepEqual(all(trusted, 'x-forwarded-port'), ['443']);
  const v6 = upstreamRequestHeaders(['Host', 'h'], who, '2001:db8::1', false, opts);
  assert.deepEqual(all(v6, 'forwarded'), ['for="[2001:db8::1]";proto=http;host=h']);
  const odd = upstreamRequestHeaders(['Host', 'a"b\\c'], who, '10.0.0.9', false, opts);
  assert.deepEqual(all(odd, 'forwarded'), ['for=10.0.0.9;proto=http;host="a\\"b\\\\c"'], 'quotes and backslashes in a quoted value are escaped');
});

test('client-address headers (X-Real-IP, True-Client-IP, …) pass only from a trusted proxy', () => {
  const raw = ['Host', 'api.example', 'X-Real-IP', '6.6.6.6', 'True-Client-IP', '6.6.6.7', 'CF-Connecting-IP', '6.6.6.8', 'Fastly-Client-IP', '6.6.6.9', 'X-Client-IP', '6.6.6.10', 'X-Cluster-Client-IP', '6.6.6.11', 'x_real_ip', '6.6.6.12'];
  const names = ['x-real-ip', 'true-client-ip', 'cf-connecting-ip', 'fastly-client-ip', 'x-client-ip', 'x-cluster-client-ip', 'x_real_ip'];
  const who = identityHeaders({ id: 7, name: 'bot', group: 'readers' });
  const opts = { keyHeader: 'x-api-key', forwardKey: false, via: '1.1 keygate-test' };
  const sent = (h: string[]): string[] => h.filter((_v, i) => i % 2 === 0).map((n) => n.toLowerCase());
  const untrusted = sent(upstreamRequestHeaders(raw, who, '10.0.0.9', false, opts));
  for (const n of names) assert.ok(!untrusted.includes(n), `${n} from an untrusted client reached the upstream`);
  const h = upstreamRequestHeaders(raw, who, '10.0.0.9', true, opts);
  const trusted = new Map(h.filter((_v, i) => i % 2 === 0).map((n, i) => [n.toLowerCase(), h[2 * i + 1]]));
  assert.equal(trusted.get('x-real-ip'), '6.6.6.6', 'a trusted proxy\'s X-Real-IP passes');
  assert.equal(trusted.get('cf-connecting-ip'), '6.6.6.8');
  assert.equal(trusted.get('x-cluster-client-ip'), '6.6.6.11');
  assert.equal(trusted.has('x_real_ip'), false, 'an underscore spelling is dropped even from a trusted proxy');
});

test('underscore spellings of the key, identity and forwarding headers, and URL overrides, are dropped', () => {
  const raw = ['X_Api_Key_Group', 'admin', 'x_api_key_id', '1', 'x_api_key_name', 'n', 'x_api_key', 'secret', 'X-Original-URL', '/admin', 'X-Rewrite-Url', '/admin', 'x_original_url', '/admin', 'X_Forwarded_Host', 'evil', 'x_http_method_override', 'DELETE', 'my_header', 'kept', 'X-Token', 'kept too'];
  const head = readRequestHead(raw, { keyHeader: 'x-api-key', forwardKey: true });
  assert.deepEqual(head.forward, ['my_header', 'kept', 'X-Token', 'kept too']);
  assert.equal(head.key, undefined, 'an underscore spelling is not read as the key');
  const renamed = readRequestHead(['x_token', 'k', 'x-token', 'the key'], { keyHeader: 'x-token', forwardKey: true });
  assert.deepEqual(renamed.forward, ['x-token', 'the key'], 'a renamed key header is matched too');
});

test('response headers lose hop-by-hop fields and gain via', () => {
  const parsed = { 'content-type': 'text/plain', connection: 'close', 'keep-alive': 'timeout=5', 'transfer-encoding': 'chunked', via: '1.0 other', 'set-cookie': ['a=1', 'b=2'] };
  const out = downstreamResponseHeaders(parsed, '1.1 keygate-test');
  assert.deepEqual(out, ['content-type', 'text/plain', 'via', '1.0 other, 1.1 keygate-test', 'set-cookie', 'a=1', 'set-cookie', 'b=2']);
  const named = downstreamResponseHeaders({ connection: 'x-hop, keep-alive', 'x-hop': '1', 'x-kept': '2' }, '1.1 keygate-test');
  assert.deepEqual(named, ['x-kept', '2', 'via', '1.1 keygate-test'], 'headers named in Connection are hop-by-hop');
});
