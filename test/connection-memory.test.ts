/**
 * A kept-alive connection remembers its key, its last admitted request line
 * and the headers keygate adds, so that a client repeating itself costs
 * less. None of it outlives a change: tightened rules, a key moved to another
 * group, or a new trusted-proxy list apply to the very next request on the
 * same connection.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { eventually, startServe, startUpstream } from './helpers/serve.ts';
import { tempConfig } from './helpers/tmp.ts';
import { sha256 } from './helpers/config.ts';

const KEY = 'kg_connmemo_reader_key_0123456789ab';

function config(upstream: string, paths: string, trusted: string[] = []): string {
  return `version: 1
config:
  keygate:
    upstream: ${upstream}
    failed_auth_per_minute: 1000000
    trusted_proxies: [${trusted.join(', ')}]
  groups:
    - name: readers
      allow:
        - methods: [GET]
          paths: [${paths}]
  api-keys:
    - name: reader
      group: readers
      key: ${KEY}
`;
}

test('what a connection remembers never outlives a change of rules or trusted proxies', async (t) => {
  const up = await startUpstream(t, (req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ xff: req.headers['x-forwarded-for'] ?? null, group: req.headers['x-api-key-group'] ?? null }));
  });
  const dir = tempConfig(t, config(up.url, '"/api/card/**"'));
  const kg = await startServe(t, dir.config, { args: ['--db', dir.db] });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.after(() => agent.destroy());
  const get = (headers: Record<string, string> = {}): Promise<{ status: number; reused: boolean; body: string }> =>
    new Promise((resolve, reject) => {
      const req = http.get(`${kg.proxy}/api/card/1`, { agent, headers: { 'x-api-key': KEY, ...headers } }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, reused: req.reusedSocket, body }));
      });
      req.on('error', reject);
    });
  const applied = async (text: string): Promise<void> => {
    dir.rewrite(text);
    assert.ok(await eventually(async () => ((await (await fetch(`${kg.admin}/status`)).json()) as { applied: { sha256: string } }).applied.sha256 === sha256(text)));
  };

  // The same request twice: the second is answered from what the connection remembers.
  assert.equal((await get({ 'x-forwarded-for': '203.0.113.9' })).status, 200);
  const again = await get({ 'x-forwarded-for': '203.0.113.9' });
  assert.deepEqual([again.status, again.reused], [200, true]);
  assert.equal((JSON.parse(again.body) as { xff: string }).xff, '127.0.0.1', 'an untrusted peer\'s X-Forwarded-For is replaced');

  // The rules are tightened: the same request on the same connection is refused at once.
  await applied(config(up.url, '"/api/dashboard/**"'));
  const refused = await get();
  assert.deepEqual([refused.status, refused.reused], [403, true], 'the connection kept admitting a path the rules no longer allow');

  // The rules allow it again, and loopback becomes a trusted proxy: its X-Forwarded-For is appended to now.
  await applied(config(up.url, '"/api/card/**"', ['127.0.0.1']));
  const trusted = await get({ 'x-forwarded-for': '203.0.113.9' });
  assert.deepEqual([trusted.status, trusted.reused], [200, true]);
  assert.equal((JSON.parse(trusted.body) as { xff: string }).xff, '203.0.113.9, 127.0.0.1', 'the connection kept the old trusted-proxy list');
  assert.equal(await kg.stop(), 0);
});
