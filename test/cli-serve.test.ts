/**
 * What `keygate serve` tells its user: where everything is once it serves
 * (with or without the demo upstream), which listener or file failed when it
 * cannot start (with the error last, and no "shutting down" before it), the
 * right counts in its first `config applied` line, and what an upstream
 * failure was. Real `keygate serve` processes, real ports and files.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, mkdirSync } from 'node:fs';
import net from 'node:net';
import { test } from 'node:test';
import { BIN, runCli, shown } from './helpers/cli.ts';
import { ADMIN_KEY, BOT_KEY, baseConfig } from './helpers/fixtures.ts';
import { eventually, freePort, serveExpectingFailure, startServe, startUpstream } from './helpers/serve.ts';
import { tempConfig, tempDir } from './helpers/tmp.ts';

/** The JSON log lines of a run. */
function logLines(stderr: string): Array<Record<string, unknown>> {
  return stderr
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

async function occupy(t: Parameters<typeof tempDir>[0]): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return (server.address() as net.AddressInfo).port;
}

test('serve prints where everything is on stdout: proxy, admin page, config and database, with the demo upstream', async (t) => {
  const c = tempConfig(t, baseConfig());
  const s = await startServe(t, 'config.yml', { cwd: c.dir });
  assert.ok(await eventually(() => s.stdout().includes('no key: 401')), s.stdout());
  const out = s.stdout().split('\n');
  assert.deepEqual(out.slice(0, 5), [
    'keygate is serving revision 1 (2 keys, 3 groups):',
    `  proxy:     ${s.proxy} → the built-in demo upstream`,
    `  admin:     ${s.admin}/ (the admin page; /status, /metrics, /healthz)`,
    '  config:    config.yml (watched: edits apply within a second)',
    '  database:  keygate.db',
  ]);
  assert.match(s.stdout(), /no upstream is configured, so the built-in demo upstream answers/);
  // The admin URL it prints is the admin page.
  const page = await fetch(`${s.admin}/`);
  assert.equal(page.status, 200);
  assert.match(page.headers.get('content-type') ?? '', /text\/html/);
  await page.arrayBuffer();
  assert.equal(await s.stop(), 0);
});

test('serve prints where everything is with a configured upstream too, and no demo hint', async (t) => {
  const upstream = await startUpstream(t);
  const c = tempConfig(t, baseConfig());
  const s = await startServe(t, c.config, { args: ['--upstream', upstream.url, '--db', c.db] });
  assert.ok(await eventually(() => s.stdout().includes('database:')), s.stdout());
  assert.match(s.stdout(), new RegExp(`^ {2}proxy: {5}${s.proxy} → ${upstream.url}$`, 'm'));
  assert.match(s.stdout(), new RegExp(`^ {2}admin: {5}${s.admin}/ `, 'm'));
  assert.match(s.stdout(), new RegExp(`^ {2}config: {4}${c.config} `, 'm'));
  assert.match(s.stdout(), new RegExp(`^ {2}database: {2}${c.db}$`, 'm'));
  assert.doesNotMatch(s.stdout(), /demo/);
  assert.equal(await s.stop(), 0);
});

test('the first "config applied" line counts what the file put in force, not what was there before', async (t) => {
  const c = tempConfig(t, baseConfig());
  const s = await startServe(t, c.config, { args: ['--db', c.db] });
  assert.equal(await s.stop(), 0);
  const applied = logLines(s.stderr()).find((l) => l.msg === 'config applied');
  assert.ok(applied !== undefined, s.stderr());
  assert.equal(applied.trigger, 'start');
  assert.equal(applied.config_keys, 2, 'the file has 2 keys');
  assert.equal(applied.api_keys, 0);
  assert.equal(applied.groups, 3);
  assert.equal(applied.create, 3);
  for (const field of ['configKeys', 'keysDeleted', 'keysMoved']) assert.ok(!(field in applied), `no ${field}: the deletion guard's own count`);
});

test('"address already in use" names the listener that could not listen, as the last line, with no "shutting down"', async (t) => {
  const c = tempConfig(t, baseConfig());
  const taken = await occupy(t);
  const run = (args: string[]) =>
    runCli(['serve', '-c', c.config, '--db', c.db, ...args], { timeoutMs: 30_000 });
  const [proxy, admin, workers] = await Promise.all([
    run(['--listen', `127.0.0.1:${taken}`, '--admin-listen', '127.0.0.1:0']),
    run(['--listen', '127.0.0.1:0', '--admin-listen', `127.0.0.1:${taken}`]),
    run(['--listen', `127.0.0.1:${taken}`, '--admin-listen', '127.0.0.1:0', '--workers', '2']),
  ]);
  for (const [r, what, flag] of [
    [proxy, 'the proxy', '--listen or keygate.listen'],
    [admin, 'the admin listener', '--admin-listen or keygate.admin_listen'],
    [workers, 'the proxy', '--listen or keygate.listen'],
  ] as const) {
    assert.equal(r.code, 1, shown(r));
    const last = r.stderr.trimEnd().split('\n').at(-1);
    assert.equal(
      last,
      `error: cannot listen on 127.0.0.1:${taken} for ${what}: address already in use (another process listens there); choose another address with ${flag}`,
      shown(r),
    );
    assert.doesNotMatch(r.stderr, /shutting down|Unhandled|EPIPE/, shown(r));
    assert.equal(r.stdout, '', 'nothing claims to be serving');
  }
});

test('a database folder this user may not write gives an error naming the folder, not a bare EACCES', async (t) => {
  const tmp = tempDir(t);
  chmodSync(tmp.dir, 0o755);
  const config = tmp.write('config.yml', baseConfig());
  chmodSync(config, 0o644);
  const folder = tmp.path('readonly');
  mkdirSync(folder, { mode: 0o555 });
  chmodSync(folder, 0o555);
  const db = `${folder}/keygate.db`;
  // As root every folder is writable: run keygate as nobody there.
  const asUser = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {};
  const run = (args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> =>
    new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [BIN, ...args], {
        cwd: tmp.dir,
        env: { LANG: 'C.UTF-8', PATH: process.env.PATH ?? '', HOME: tmp.dir },
        ...asUser,
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (b: Buffer) => (stdout += b.toString('utf8')));
      child.stderr.on('data', (b: Buffer) => (stderr += b.toString('utf8')));
      const guard = setTimeout(() => child.kill('SIGKILL'), 30_000);
      child.on('error', reject);
      child.on('close', (code) => {
        clearTimeout(guard);
        resolve({ code, stdout, stderr });
      });
    });
  const [serve, apply] = await Promise.all([
    run(['serve', '-c', config, '--db', db, '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0']),
    run(['apply', '-c', config, '--db', db]),
  ]);
  for (const r of [serve, apply]) {
    assert.equal(r.code, 1, shown(r));
    const last = r.stderr.trimEnd().split('\n').at(-1) ?? '';
    assert.match(last, new RegExp(`^error: cannot create the database ${db}: the folder ${folder} is not writable by this user \\(.+\\) \\(permission denied\\); make it writable, or put the database elsewhere with --db, KEYGATE_DB, keygate\\.database or KEYGATE_DATA_DIR$`), shown(r));
    assert.doesNotMatch(r.stderr, /EACCES|shutting down/, shown(r));
  }
});

test('an invalid file at start: every error, then "not serving" last, and no "shutting down"', async (t) => {
  const c = tempConfig(t, baseConfig({ botGroup: 'analyst' }));
  const r = await serveExpectingFailure(c.config);
  assert.equal(r.code, 1, r.stderr);
  const lines = r.stderr.trimEnd().split('\n');
  assert.match(lines.at(-1) ?? '', /^serve: .*config\.yml is invalid \(1 error\): not serving$/);
  assert.match(lines.at(-2) ?? '', /^error: .*api-keys\[1\]\.group: unknown group "analyst"/);
  assert.doesNotMatch(r.stderr, /shutting down|"msg":"stopped"/);
});

test('an upstream failure is logged with its cause: a DNS failure says so, a refused connection says so', async (t) => {
  const c = tempConfig(t, baseConfig());
  const refusedPort = await freePort();
  for (const [upstream, reason] of [
    ['http://keygate-test.invalid:3000', /^DNS lookup failed/],
    [`http://127.0.0.1:${refusedPort}`, /^connection refused/],
  ] as const) {
    const s = await startServe(t, c.config, { args: ['--db', c.db, '--upstream', upstream] });
    const r = await fetch(`${s.proxy}/api/card/1`, { headers: { 'x-api-key': BOT_KEY } });
    assert.equal(r.status, 502);
    await r.arrayBuffer();
    assert.ok(await eventually(() => s.stderr().includes('"msg":"upstream failed"')), s.stderr());
    assert.equal(await s.stop(), 0);
    const line = logLines(s.stderr()).find((l) => l.msg === 'upstream failed') as { err: Record<string, unknown> };
    assert.match(String(line.err.reason), reason, JSON.stringify(line));
    assert.equal(typeof line.err.code, 'string');
    assert.notEqual(line.err.type, 'Object', 'not an Error of type "Object"');
    assert.notEqual(line.err.stack, '', 'no empty stack');
    assert.ok(!s.stderr().includes(BOT_KEY) && !s.stderr().includes(ADMIN_KEY));
  }
});
