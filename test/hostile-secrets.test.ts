/**
 * Hostile input, part 7: secrets. Runs every CLI command and a whole serve
 * session (valid, wrong, duplicated and misplaced keys, management API calls,
 * reloads that succeed and fail, SIGHUP, SIGTERM) with debug logging, then
 * searches everything printed, every answer, what the upstream received and the
 * database files (with their -wal and -shm) for every key used. None may appear:
 * neither a whole key nor the part after the 7-character display prefix.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { runCli, type CliResult } from './helpers/cli.ts';
import { tempConfig } from './helpers/tmp.ts';
import { eventually, startServe, startUpstream } from './helpers/serve.ts';
import { call } from './helpers/hostile.ts';

const rand = (): string => randomBytes(18).toString('base64url').replace(/[-_]/g, 'x');
const LITERAL = `kg_lit_${rand()}`;
const TEMPLATED = `kg_tpl_${rand()}`;
const HASHED = `kg_hsh_${rand()}`;
const ROTATED = `kg_rot_${rand()}`;
const INVALID_NEW = `kg_inv_${rand()}`;
const WRONG = `kg_wrg_${rand()}`;
const ENV = { TEMPLATED_SECRET: TEMPLATED };

const sha = (s: string): string => createHash('sha256').update(s).digest('hex');

function config(upstream: string, adminKey: string, extra = ''): string {
  return `version: 1
config:
  keygate:
    upstream: ${upstream}
    last_used_flush_ms: 200
    failed_auth_per_minute: 1000
  users:
    - email: cam@example.com
  groups:
    - name: analysts
      allow:
        - methods: [GET]
          paths: ["/api/card/**"]
  api-keys:
    - name: Admin
      group: admin
      creator: cam@example.com
      key: ${adminKey}
    - name: Templated
      group: analysts
      key: "{{env TEMPLATED_SECRET}}"
    - name: Hashed
      group: analysts
      key_hash: "sha256:${sha(HASHED)}"
${extra}`;
}

/** An invalid file: an unknown group, a duplicate key, a key with whitespace. All carry key material. */
const invalidExtra = `    - name: Bad group
      group: no-such-group
      key: ${INVALID_NEW}
    - name: Same key again
      group: admin
      key: ${ROTATED}
    - name: Spaced
      group: admin
      key: "${INVALID_NEW} ${INVALID_NEW}"
    - name: Short
      group: admin
      key: ${INVALID_NEW.slice(0, 9)}
`;

interface Collected {
  label: string;
  text: string;
}

function search(collected: readonly Collected[], secrets: readonly string[]): string[] {
  const found: string[] = [];
  for (const { label, text } of collected) {
    for (const s of secrets) {
      if (text.includes(s)) found.push(`${label}: contains the key ${s.slice(0, 7)}…`);
      else if (text.includes(s.slice(7))) found.push(`${label}: contains the secret part of ${s.slice(0, 7)}…`);
    }
  }
  return found;
}

test('no key used in any CLI command or serve session shows up in output, answers, logs or database files', async (t) => {
  const up = await startUpstream(t);
  const dir = tempConfig(t, config(up.url, LITERAL));
  const collected: Collected[] = [];
  const cli = async (label: string, args: string[], opts: { input?: string; expect?: number[] } = {}): Promise<CliResult> => {
    const r = await runCli(args, { cwd: dir.dir, env: ENV, ...(opts.input !== undefined ? { input: opts.input } : {}) });
    collected.push({ label: `${label} (stdout)`, text: r.stdout }, { label: `${label} (stderr)`, text: r.stderr });
    if (opts.expect !== undefined) assert.ok(opts.expect.includes(r.code ?? -1), `${label}: exit ${String(r.code)}\n${r.stdout}\n${r.stderr}`);
    return r;
  };

  // --- Every CLI command, on a valid file, a rotated one and an invalid one (text and --json
  // variants spread over them), side by side where the order does not matter.
  await Promise.all([
    cli('--help', ['--help'], { expect: [0] }),
    cli('schema', ['schema'], { expect: [0] }),
    cli('validate', ['validate', '-c', 'config.yml'], { expect: [0] }),
    cli('plan --json', ['plan', '-c', 'config.yml', '--json'], { expect: [2] }),
    cli('keys hash (argument)', ['keys', 'hash', LITERAL], { expect: [0] }),
    cli('keys hash (stdin)', ['keys', 'hash'], { input: `${TEMPLATED}\n`, expect: [0] }),
    cli('keys generate', ['keys', 'generate', '--name', 'Fresh', '--group', 'analysts'], { expect: [0] }),
  ]);
  await cli('apply', ['apply', '-c', 'config.yml'], { expect: [0] });
  await cli('keys list --json', ['keys', 'list', '-c', 'config.yml', '--json'], { expect: [0] });
  dir.rewrite(config(up.url, ROTATED));
  await cli('plan after rotation', ['plan', '-c', 'config.yml'], { expect: [2] });
  await cli('apply --json after rotation', ['apply', '-c', 'config.yml', '--json'], { expect: [0] });
  await cli('keys list', ['keys', 'list', '-c', 'config.yml'], { expect: [0] });
  dir.rewrite(config(up.url, ROTATED, invalidExtra));
  await Promise.all([
    cli('validate --json (invalid)', ['validate', '-c', 'config.yml', '--json'], { expect: [1] }),
    cli('plan (invalid)', ['plan', '-c', 'config.yml'], { expect: [1] }),
    cli('apply --json (invalid)', ['apply', '-c', 'config.yml', '--json'], { expect: [1] }),
    // A missing variable: the message names the variable, never another secret.
    runCli(['validate', '-c', 'config.yml'], { cwd: dir.dir, env: {} }).then((r) => void collected.push({ label: 'validate without env', text: r.stdout + r.stderr })),
  ]);

  // --- A serve session, with debug logs, back on the first file.
  dir.rewrite(config(up.url, LITERAL));
  const kg = await startServe(t, dir.config, { args: ['--db', dir.db], env: { ...ENV, KEYGATE_LOG_LEVEL: 'debug' } });
  const proxyCall = async (label: string, path: string, headers: Record<string, string | string[]>, expect: number, method = 'GET'): Promise<void> => {
    const r = await call(kg.proxy, path, { headers, method });
    collected.push({ label: `proxy answer: ${label}`, text: JSON.stringify(r.headers) + r.text });
    assert.equal(r.status, expect, label);
  };
  const adminCall = async (label: string, method: string, path: string, body?: unknown, secretAnswer = false): Promise<Record<string, unknown>> => {
    const r = await call(kg.admin, path, {
      method,
      headers: { 'x-api-key': LITERAL, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    // The create and regenerate answers are the one place a new key is shown, by design.
    if (!secretAnswer) collected.push({ label: `admin answer: ${label}`, text: JSON.stringify(r.headers) + r.text });
    assert.ok(r.status < 300, `${label}: ${r.status} ${r.text}`);
    return (r.text === '' ? {} : JSON.parse(r.text)) as Record<string, unknown>;
  };

  await proxyCall('literal key', '/api/anything', { 'x-api-key': LITERAL }, 200);
  await proxyCall('templated key', '/api/card/1', { 'x-api-key': TEMPLATED }, 200);
  await proxyCall('templated key, forbidden', '/api/user/1', { 'x-api-key': TEMPLATED }, 403);
  await proxyCall('hashed key', '/api/card/2', { 'x-api-key': HASHED }, 200);
  await proxyCall('wrong key', '/api/card/1', { 'x-api-key': WRONG }, 401);
  await proxyCall('two keys', '/api/card/1', { 'x-api-key': [LITERAL, HASHED] }, 400);
  await proxyCall('two keys in one value', '/api/card/1', { 'x-api-key': `${LITERAL}, ${WRONG}` }, 400);
  await proxyCall('key in the query', `/api/card/1?api_key=${LITERAL}&x-api-key=${TEMPLATED}`, {}, 401);
  await proxyCall('key as bearer token', '/api/card/1', { authorization: `Bearer ${HASHED}` }, 401);
  await proxyCall('bad path with a key', '/api/%2e%2e/%2e%2e/x', { 'x-api-key': TEMPLATED }, 400);
  await proxyCall('POST with a key', '/api/card/1', { 'x-api-key': TEMPLATED }, 403, 'POST');
  // An absolute-form target with a key as its password: refused, and the authority is never logged.
  await proxyCall('key in an absolute-form target', `http://ci:${LITERAL}@api.example/api/card/1?k=${HASHED}`, { 'x-api-key': TEMPLATED }, 400);

  await adminCall('list keys', 'GET', '/api/api-key');
  await adminCall('list groups', 'GET', '/api/permissions/group');
  const created = await adminCall('create key', 'POST', '/api/api-key', { name: 'Made by API', group_id: 1, description: 'test' }, true);
  const API_KEY = String(created.unmasked_key);
  assert.ok(API_KEY.length > 20);
  await proxyCall('api-created key', '/x', { 'x-api-key': API_KEY }, 200);
  const regenerated = await adminCall('regenerate key', 'PUT', `/api/api-key/${String(created.id)}/regenerate`, undefined, true);
  const API_KEY2 = String(regenerated.unmasked_key);
  await proxyCall('api key after regenerate (old)', '/x', { 'x-api-key': API_KEY }, 401);
  await proxyCall('api key after regenerate (new)', '/x', { 'x-api-key': API_KEY2 }, 200);
  await adminCall('list keys again', 'GET', '/api/api-key');
  for (const path of ['/status', '/metrics', '/healthz', '/readyz']) {
    const r = await call(kg.admin, path);
    collected.push({ label: `admin ${path}`, text: r.text });
  }

  // A reload that rotates the admin key, then one that fails on an invalid file full of keys.
  dir.rewrite(config(up.url, ROTATED));
  const status = async (): Promise<{ applied: { sha256: string }; last_reload: { result: string } | null }> =>
    JSON.parse((await call(kg.admin, '/status')).text) as { applied: { sha256: string }; last_reload: { result: string } | null };
  const fileSha = (): string => sha(readFileSync(dir.config, 'utf8'));
  assert.ok(await eventually(async () => (await status()).applied.sha256 === fileSha()), 'the rotation was not applied');
  await proxyCall('rotated key', '/y', { 'x-api-key': ROTATED }, 200);
  await proxyCall('old key after rotation', '/y', { 'x-api-key': LITERAL }, 401);
  dir.rewrite(config(up.url, ROTATED, invalidExtra));
  assert.ok(await eventually(async () => (await status()).last_reload?.result === 'failure'), 'the invalid file was not reported');
  const failures = async (): Promise<number> => Number(/^keygate_reloads_total\{result="failure"\} (\d+)$/m.exec((await call(kg.admin, '/metrics')).text)?.[1] ?? 0);
  const before = await failures();
  kg.child.kill('SIGHUP');
  assert.ok(await eventually(async () => (await failures()) > before), 'SIGHUP made no reload attempt');
  for (const path of ['/status', '/metrics']) collected.push({ label: `admin ${path} after a failed reload`, text: (await call(kg.admin, path)).text });

  // The database files while serving (the -wal holds the latest writes).
  const dbFiles = (when: string): void => {
    for (const f of [dir.db, `${dir.db}-wal`, `${dir.db}-shm`]) {
      if (existsSync(f)) collected.push({ label: `${f.slice(dir.dir.length + 1)} (${when})`, text: readFileSync(f).toString('latin1') });
    }
  };
  dbFiles('while serving');
  assert.equal(await kg.stop(), 0);
  collected.push({ label: 'serve stdout', text: kg.stdout() }, { label: 'serve stderr', text: kg.stderr() });
  dbFiles('after shutdown');
  for (const s of up.seen) collected.push({ label: `upstream received ${s.method} ${s.url}`, text: `${s.url}\n${s.rawHeaders.join('\n')}` });

  // The search is real: the logs hold the request lines and the database the digests.
  assert.match(kg.stderr(), /"key_name":"Templated"/);
  const db = collected.filter((c) => c.label.startsWith('keygate.db')).map((c) => c.text).join('');
  assert.ok(db.includes(sha(TEMPLATED)) && db.includes(sha(ROTATED)), 'the database files hold the digests');

  const secrets = [LITERAL, TEMPLATED, HASHED, ROTATED, INVALID_NEW, WRONG, API_KEY, API_KEY2];
  // The query string is not part of the logged request, but a key sent there is not "used": it
  // is still searched for, since keygate must never echo it.
  const found = search(collected, secrets);
  assert.deepEqual(found, [], `keys found:\n${found.join('\n')}`);
  t.diagnostic(`searched ${collected.length} outputs, answers and files (${Math.round(collected.reduce((n, c) => n + c.text.length, 0) / 1024)} kB) for ${secrets.length} keys`);
});
