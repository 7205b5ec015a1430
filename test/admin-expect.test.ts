/**
 * `Expect: 100-continue` on the admin listener: no 100 Continue before the
 * caller's admin key is checked, so nobody without a key is invited to upload
 * a body; with a good key, 100 Continue, then the answer.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startServe, startUpstream } from './helpers/serve.ts';
import { tempConfig } from './helpers/tmp.ts';

const ADMIN_KEY = 'kg_expect_admin_key_0123456789ab';

/** Sends a head, waits for the first answer bytes, then (when told) the body; resolves with everything read until close. */
function conversation(base: string, head: string, body: string, sendBodyAfterContinue: boolean): Promise<string> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const s = net.connect(Number(u.port), u.hostname);
    let got = '';
    let sent = false;
    s.on('data', (c: Buffer) => {
      got += c.toString('latin1');
      if (!sent && sendBodyAfterContinue && got.startsWith('HTTP/1.1 100')) {
        sent = true;
        s.write(body);
      }
    });
    s.on('error', reject);
    s.on('close', () => resolve(got));
    s.write(head);
  });
}

test('the management API sends 100 Continue only after the admin key is checked', async (t) => {
  const up = await startUpstream(t);
  const dir = tempConfig(t, `version: 1\nconfig:\n  keygate:\n    upstream: ${up.url}\n  api-keys:\n    - name: admin\n      group: admin\n      key: ${ADMIN_KEY}\n`);
  const kg = await startServe(t, dir.config, { args: ['--db', dir.db] });
  const body = JSON.stringify({ name: 'uploaded after 100', group_id: 1 });
  const head = (key: string | null): string =>
    `POST /api/api-key HTTP/1.1\r\nHost: admin\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nExpect: 100-continue\r\n` +
    `${key === null ? '' : `x-api-key: ${key}\r\n`}Connection: close\r\n\r\n`;

  const refused = await conversation(kg.admin, head(null), body, true);
  assert.match(refused, /^HTTP\/1\.1 401 /, 'a caller without a key was invited to send its body');
  assert.doesNotMatch(refused, /100 Continue/);

  const wrongKey = await conversation(kg.admin, head('kg_not_an_admin_key_at_all_0000'), body, true);
  assert.match(wrongKey, /^HTTP\/1\.1 401 /);

  const accepted = await conversation(kg.admin, head(ADMIN_KEY), body, true);
  assert.match(accepted, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 /);
  assert.match(accepted, /"unmasked_key":"kg_/);
  assert.equal(await kg.stop(), 0);
});
