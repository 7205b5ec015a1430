/**
 * A group removed or renamed in the file never widens what a key may call.
 * Its api-owned keys move to all-users (Metabase's rule) with the lost group's
 * rules as their own, so they keep only routes both allow. The plan says so,
 * and the deletion guard counts the moves. Real `keygate serve` and CLI
 * processes, a real upstream.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runCli, shown } from './helpers/cli.ts';
import { eventually, startServe, startUpstream } from './helpers/serve.ts';
import { tempConfig } from './helpers/tmp.ts';
import { sha256 } from './helpers/config.ts';

const ADMIN_KEY = 'kg_groupgone_admin_key_0123456789';

function config(upstream: string, group: 'analysts' | 'readers'): string {
  return `version: 1
config:
  keygate:
    upstream: ${upstream}
    failed_auth_per_minute: 1000000
  groups:
    - name: ${group}
      allow:
        - methods: [GET]
          paths: ["/api/card/**"]
  api-keys:
    - name: Admin API key
      group: admin
      key: ${ADMIN_KEY}
`;
}

async function call(base: string, method: string, path: string, key: string, body?: object): Promise<{ status: number; json: Record<string, unknown> }> {
  const r = await fetch(`${base}${path}`, {
    method,
    headers: { 'x-api-key': key, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await r.text();
  return { status: r.status, json: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>) };
}

test('renaming a group in the file moves its api-created keys to all-users without giving them a single new route', async (t) => {
  const up = await startUpstream(t);
  const dir = tempConfig(t, config(up.url, 'analysts'));
  const kg = await startServe(t, dir.config, { args: ['--db', dir.db] });
  const groups = (await call(kg.admin, 'GET', '/api/permissions/group', ADMIN_KEY)).json as unknown as Array<{ id: number; name: string }>;
  const analysts = groups.find((g) => g.name === 'analysts');
  const created = await call(kg.admin, 'POST', '/api/api-key', ADMIN_KEY, { name: 'dashboards robot', group_id: analysts?.id });
  assert.equal(created.status, 200);
  const key = created.json.unmasked_key as string;
  const routes: Array<[string, string]> = [
    ['GET', '/api/card/1'],
    ['DELETE', '/api/admin/settings'],
    ['POST', '/api/card/1'],
    ['GET', '/api/user/current'],
  ];
  const statuses = async (): Promise<number[]> => Promise.all(routes.map(async ([m, p]) => (await call(kg.proxy, m, p, key)).status));
  // all-users has no rules (every route); analysts only GET /api/card/**.
  assert.deepEqual(await statuses(), [200, 403, 403, 403]);

  // The plan names the move and why.
  const renamed = config(up.url, 'readers');
  const planDir = tempConfig(t, renamed);
  const plan = await runCli(['plan', '-c', planDir.config, '--db', dir.db]);
  assert.equal(plan.code, 2, shown(plan));
  assert.match(plan.stdout, /~ update key "dashboards robot": group "analysts" → "all-users"; allow none → \[\{"methods":\["GET"\],"paths":\["\/api\/card\/\*\*"\]\}\] \(group "analysts" is deleted: the api-owned key moves to all-users and keeps the rules of "analysts" as its own, so it gains no route\)/);

  dir.rewrite(renamed);
  assert.ok(
    await eventually(async () => ((await call(kg.admin, 'GET', '/status', ADMIN_KEY)).json.applied as { sha256: string }).sha256 === sha256(renamed)),
    'the renamed group was never applied',
  );
  const listed = (await call(kg.admin, 'GET', '/api/api-key', ADMIN_KEY)).json as unknown as Array<{ name: string; group: { name: string } }>;
  assert.equal(listed.find((k) => k.name === 'dashboards robot')?.group.name, 'All Users', 'the API calls all-users by Metabase\'s name');
  // Still a key, in all-users, with exactly the routes it had: none gained.
  assert.deepEqual(await statuses(), [200, 403, 403, 403]);
  assert.equal(await kg.stop(), 0);
});

test('the deletion guard counts api-owned keys moved off a deleted group', async (t) => {
  const up = await startUpstream(t);
  const dir = tempConfig(t, config(up.url, 'analysts'));
  const kg = await startServe(t, dir.config, { args: ['--db', dir.db] });
  const groups = (await call(kg.admin, 'GET', '/api/permissions/group', ADMIN_KEY)).json as unknown as Array<{ id: number; name: string }>;
  const analysts = groups.find((g) => g.name === 'analysts');
  for (let i = 0; i < 12; i++) {
    assert.equal((await call(kg.admin, 'POST', '/api/api-key', ADMIN_KEY, { name: `robot ${i}`, group_id: analysts?.id })).status, 200);
  }
  assert.equal(await kg.stop(), 0);

  const renamed = config(up.url, 'readers');
  dir.rewrite(renamed);
  const refused = await runCli(['apply', '-c', dir.config, '--db', dir.db]);
  assert.equal(refused.code, 1, shown(refused));
  assert.match(refused.stderr, /deletion guard: the change would delete 0 of 1 config-owned keys and move 12 api-owned keys off deleted groups \(12 in all, limit 10\)/);
  const allowed = await runCli(['apply', '-c', dir.config, '--db', dir.db, '--allow-deletes']);
  assert.equal(allowed.code, 0, shown(allowed));
  assert.match(allowed.stdout, /Applied revision/);
});
