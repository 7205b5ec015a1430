import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tempConfig } from './helpers/tmp.ts';
import { eventually, startServe, startUpstream } from './helpers/serve.ts';

const KEY = 'kg_switch_test_key_0123456789abcdef';

const config = (upstream: string | null): string => `version: 1
config:
  keygate:
    reload_debounce_ms: 20
${upstream === null ? '' : `    upstream: ${upstream}\n`}  api-keys:
    - name: switcher
      group: all-users
      key: ${KEY}
`;

test('a daemon started on the demo upstream switches to an upstream the file names later', async (t) => {
  const up = await startUpstream(t, (req, res) => {
    req.resume();
    res.end('from the real upstream');
  });
  const dir = tempConfig(t, config(null));
  const kg = await startServe(t, dir.config, { args: ['--db', dir.db] });
  const body = async (): Promise<string> => (await fetch(`${kg.proxy}/x`, { headers: { 'x-api-key': KEY } })).text();
  assert.match(await body(), /built-in demo upstream/);

  dir.rewrite(config(up.url));
  assert.ok(await eventually(async () => (await body()) === 'from the real upstream', 3000), 'requests still go to the demo');
  const status = (await (await fetch(`${kg.admin}/status`)).json()) as { upstream: string };
  assert.equal(status.upstream, new URL(up.url).origin);
  assert.match(kg.stderr(), /the demo upstream is stopped/);
});
