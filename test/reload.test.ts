/**
 * Live reload against a real `keygate serve` child process and real files:
 * every way a config file changes on disk, every way a reload can fail (last
 * good wins), immediate revocation, expiry without a reload, and a storm of
 * edits under continuous traffic.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, renameSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import type { LastReload } from '../src/daemon/reload-machine.ts';
import { tempDir, type TempDir } from './helpers/tmp.ts';
import { eventually, sleep, startServe, startUpstream, type Served } from './helpers/serve.ts';

/**
 * How long to wait for a change to be enforced before calling it lost: a hang
 * guard only, never a speed bar (bench/reload.ts measures how fast it is).
 */
const HANG_GUARD_MS = 30_000;
/** High enough that polling with refused keys never trips the failed-auth throttle. */
const NO_THROTTLE = 1_000_000;

// ---------------------------------------------------------------------------
// Config files

interface KeySpec {
  name: string;
  /** The plaintext key; or `template` for a `{{env NAME}}` value. */
  key?: string;
  template?: string;
  group?: string;
  disabled?: boolean;
  /** Written unquoted, as users write RFC 3339 times. */
  expires?: string;
}

interface Settings {
  [name: string]: string | number;
}

/** A config with groups `even` (/even/**), `odd` (/odd/**) and `team` (every route); `api-keys` comes last. */
function render(upstream: string, keys: readonly KeySpec[], settings: Settings = {}): string {
  const out = [
    'version: 1',
    'config:',
    '  keygate:',
    `    upstream: ${upstream}`,
    `    failed_auth_per_minute: ${NO_THROTTLE}`,
    ...Object.entries(settings).map(([k, v]) => `    ${k}: ${v}`),
    '  groups:',
    '    - name: even',
    '      allow:',
    '        - paths: ["/even/**"]',
    '    - name: odd',
    '      allow:',
    '        - paths: ["/odd/**"]',
    '    - name: team',
    '      description: every route',
    '  api-keys:',
  ];
  for (const k of keys) out.push(...keyEntry(k));
  return `${out.join('\n')}\n`;
}

function keyEntry(k: KeySpec): string[] {
  const lines = [`    - name: ${JSON.stringify(k.name)}`, `      group: ${k.group ?? 'team'}`];
  if (k.key !== undefined) lines.push(`      key: ${JSON.stringify(k.key)}`);
  if (k.template !== undefined) lines.push(`      key: "{{env ${k.template}}}"`);
  if (k.disabled === true) lines.push('      disabled: true');
  if (k.expires !== undefined) lines.push(`      expires_at: ${k.expires}`);
  return lines;
}

/** Every plaintext key a test used: none may ever appear in the daemon's output. */
const SECRETS = new Set<string>();

/** A fresh, well-formed key (and remembers it as a secret). */
function keyFor(label: string): string {
  const k = `kg_${label.replace(/[^A-Za-z0-9]/g, '_')}_${createHash('sha256').update(label).digest('hex').slice(0, 24)}`;
  SECRETS.add(k);
  return k;
}

function sha(bytes: string | Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** In-place rewrite: truncate and write the same inode. */
function writeInPlace(file: string, text: string | Buffer): void {
  writeFileSync(file, text);
}

/** What editors and config tools do: write a temp file beside it, then rename it over. */
function writeRenameOver(file: string, text: string | Buffer): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  writeFileSync(tmp, text);
  renameSync(tmp, file);
}

/** Delete, then create again. */
function deleteRecreate(file: string, text: string | Buffer): void {
  unlinkSync(file);
  writeFileSync(file, text);
}

// ---------------------------------------------------------------------------
// Talking to the daemon

interface Answer {
  status: number;
  text: string;
}

const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 16 });

function get(base: string, urlPath: string, key?: string, agent: http.Agent | false = false): Promise<Answer> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: u.hostname, port: u.port, path: urlPath, method: 'GET', headers: key === undefined ? {} : { 'x-api-key': key }, agent },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** A GET through `agent`, telling whether the request went out on a reused (kept-alive) socket. */
function getOn(agent: http.Agent, base: string, key: string): Promise<{ status: number; reused: boolean }> {
  return new Promise((resolve, reject) => {
    const req = http.get(`${base}/api/x`, { agent, headers: { 'x-api-key': key } }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, reused: req.reusedSocket }));
    });
    req.on('error', reject);
  });
}

interface Status {
  config_file: string;
  applied: { sha256: string | null; at: string | null; revision: number | null };
  file_in_sync: boolean;
  last_reload: LastReload | null;
  keys: { total: number };
}

async function status(kg: Served): Promise<Status> {
  const r = await get(kg.admin, '/status');
  assert.equal(r.status, 200, r.text);
  return JSON.parse(r.text) as Status;
}

async function metricsText(kg: Served): Promise<string> {
  const r = await get(kg.admin, '/metrics');
  assert.equal(r.status, 200);
  return r.text;
}

/** A sample's value in Prometheus text, 0 when the series is absent (a counter never incremented). */
function sample(text: string, series: string): number {
  const escaped = series.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const m = new RegExp(`^${escaped} (\\S+)$`, 'm').exec(text);
  return m === null ? 0 : Number(m[1]);
}

interface ReloadCounts {
  success: number;
  failure: number;
  unchanged: number;
  lastSuccess: number;
}

async function reloadCounts(kg: Served): Promise<ReloadCounts> {
  const m = await metricsText(kg);
  assert.match(m, /^# TYPE keygate_last_reload_success gauge$/m, 'keygate_last_reload_success is exposed as a gauge');
  assert.match(m, /^keygate_last_reload_success \S+$/m);
  return {
    success: sample(m, 'keygate_reloads_total{result="success"}'),
    failure: sample(m, 'keygate_reloads_total{result="failure"}'),
    unchanged: sample(m, 'keygate_reloads_total{result="unchanged"}'),
    lastSuccess: sample(m, 'keygate_last_reload_success'),
  };
}

/** The daemon's JSON log lines whose message matches `re`. */
function logLines(kg: Served, re: RegExp): Array<Record<string, unknown>> {
  const found: Array<Record<string, unknown>> = [];
  for (const line of kg.stderr().split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const o = JSON.parse(line) as Record<string, unknown>;
      if (typeof o.msg === 'string' && re.test(o.msg)) found.push(o);
    } catch {
      // a line still being written
    }
  }
  return found;
}

const RELOAD_FAILED = /reload failed/;

function assertNoSecrets(text: string, what: string): void {
  for (const k of SECRETS) assert.ok(!text.includes(k), `${what} contains the key ${k.slice(0, 10)}…`);
}

/** Statuses of `keys` on `urlPath`, for messages. */
async function statuses(kg: Served, keys: readonly string[], urlPath = '/api/x'): Promise<string> {
  const parts: string[] = [];
  for (const k of keys) parts.push(`${k.slice(0, 16)}…=${(await get(kg.proxy, urlPath, k)).status}`);
  return parts.join(' ');
}

/** Polls until every `admitted` key gets 200 and every `refused` key 401. */
async function assertEnforced(kg: Served, admitted: readonly string[], refused: readonly string[], what: string, urlPath = '/api/x'): Promise<void> {
  const ok = await eventually(async () => {
    for (const k of admitted) if ((await get(kg.proxy, urlPath, k)).status !== 200) return false;
    for (const k of refused) if ((await get(kg.proxy, urlPath, k)).status !== 401) return false;
    return true;
  }, HANG_GUARD_MS);
  if (!ok) {
    const s = await status(kg);
    assert.fail(
      `${what}: never enforced\nadmitted should be 200: ${await statuses(kg, admitted, urlPath)}\n` +
        `refused should be 401: ${await statuses(kg, refused, urlPath)}\n/status: ${JSON.stringify(s)}`,
    );
  }
}

/** Checks, right now, that `admitted` keys get 200 and `refused` ones 401. */
async function assertState(kg: Served, admitted: readonly string[], refused: readonly string[], what: string): Promise<void> {
  for (const k of admitted) assert.equal((await get(kg.proxy, '/api/x', k)).status, 200, `${what}: a previous key stopped working (${k.slice(0, 16)}…)`);
  for (const k of refused) assert.equal((await get(kg.proxy, '/api/x', k)).status, 401, `${what}: a key was admitted that should not be (${k.slice(0, 16)}…)`);
}

/** Waits until /status shows `text` applied. */
async function waitApplied(kg: Served, text: string | Buffer, what: string): Promise<Status> {
  let last: Status | null = null;
  const ok = await eventually(async () => {
    last = await status(kg);
    return last.applied.sha256 === sha(text);
  }, HANG_GUARD_MS);
  assert.ok(ok, `${what}: /status never showed the file applied: ${JSON.stringify(last)}`);
  return last as unknown as Status;
}

/** Waits until /status shows a failed reload of the bytes `fileSha` (null: unreadable or missing) whose error matches `error`. */
async function waitFailure(kg: Served, fileSha: string | null, error: RegExp, what: string): Promise<Status> {
  let last: Status | null = null;
  const ok = await eventually(async () => {
    last = await status(kg);
    const r = last.last_reload;
    return r !== null && r.result === 'failure' && r.sha256 === fileSha && error.test(r.error ?? '');
  }, HANG_GUARD_MS);
  assert.ok(ok, `${what}: /status never showed the failed reload (want error ${error}): ${JSON.stringify(last)}`);
  return last as unknown as Status;
}

function echoUpstream(t: TestContext): ReturnType<typeof startUpstream> {
  return startUpstream(t, (req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ group: req.headers['x-api-key-group'] ?? null, name: req.headers['x-api-key-name'] ?? null }));
    });
  });
}

// ---------------------------------------------------------------------------
// 1. Every way a file changes on disk is seen

test('every way the config file changes on disk is seen and enforced', async (t) => {
  const up = await echoUpstream(t);
  const tmp = tempDir(t);
  const file = tmp.path('config.yml');
  const settings = { reload_debounce_ms: 10 };
  const base = { name: 'base', key: keyFor('watch base') };
  let current: KeySpec[] = [base, { name: 'step-0', key: keyFor('watch step 0') }];
  let text = render(up.url, current, settings);
  writeFileSync(file, text);
  const kg = await startServe(t, file, { args: ['--db', tmp.path('keygate.db')], env: { KEYGATE_LOG_LEVEL: 'debug' } });

  /** Adds key `step-n`, removes the oldest step key, writes the file with `how`, and waits until both are enforced. */
  const step = async (n: number, how: (file: string, text: string) => void, what: string): Promise<void> => {
    const added = { name: `step-${n}`, key: keyFor(`watch step ${n}`) };
    const removed = current[1] as KeySpec;
    current = [base, ...current.slice(2), added];
    text = render(up.url, current, settings);
    how(file, text);
    await assertEnforced(kg, [base.key, added.key as string], [removed.key as string], what);
    assert.equal((await waitApplied(kg, text, what)).file_in_sync, true);
  };

  await t.test('serves the file it started with', async () => {
    await assertState(kg, [base.key, current[1]!.key as string], [keyFor('watch never declared')], 'start');
  });

  await t.test('an in-place rewrite admits the new key and refuses the removed one, also on a kept-alive connection', async () => {
    // One kept-alive connection that authenticated with the key the edit removes: the proxy must not
    // go on trusting what it checked on that connection before the reload.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const doomed = current[1]!.key as string;
      const before = await getOn(agent, kg.proxy, doomed);
      assert.deepEqual([before.status, before.reused], [200, false]);
      await step(1, writeInPlace, 'in-place rewrite');
      const after = await getOn(agent, kg.proxy, doomed);
      assert.deepEqual([after.status, after.reused], [401, true], 'the removed key was still admitted on the same connection');
    } finally {
      agent.destroy();
    }
  });

  await t.test('a write to a temp file renamed over the config is seen', async () => {
    await step(2, writeRenameOver, 'rename over');
  });

  await t.test('a delete followed at once by a re-create is seen', async () => {
    await step(3, deleteRecreate, 'delete and re-create');
  });

  await t.test('a file deleted after start keeps the last good keys, and is applied when it appears again', async () => {
    const before = current.map((k) => k.key as string);
    unlinkSync(file);
    const s = await waitFailure(kg, null, /not found|deleted/i, 'file deleted');
    assert.equal(s.file_in_sync, false);
    await assertState(kg, before, [], 'while the file is missing');
    await step(4, (f, text) => writeFileSync(f, text), 'file appears again');
  });

  await t.test('of two edits written back to back, the second is what is served', async () => {
    // Five pairs: however the two writes fall around a reload, the last one wins.
    for (let pair = 0; pair < 5; pair++) {
      const first = { name: `quick-${pair}-a`, key: keyFor(`watch quick ${pair} a`) };
      const second = { name: `quick-${pair}-b`, key: keyFor(`watch quick ${pair} b`) };
      writeInPlace(file, render(up.url, [base, first], settings));
      current = [base, second];
      text = render(up.url, current, settings);
      writeInPlace(file, text);
      await assertEnforced(kg, [base.key, second.key], [first.key], `quick pair ${pair}`);
      await waitApplied(kg, text, `quick pair ${pair}`);
    }
  });

  await t.test('a deletion right after a delete-and-recreate is still seen and reported', async () => {
    // The second delete comes as soon as the re-created file is applied.
    for (let round = 0; round < 3; round++) {
      const added = { name: `recreated-${round}`, key: keyFor(`watch recreated ${round}`) };
      current = [base, added];
      text = render(up.url, current, settings);
      unlinkSync(file);
      writeFileSync(file, text);
      await waitApplied(kg, text, `re-created ${round}`);
      unlinkSync(file);
      await waitFailure(kg, null, /not found|deleted/i, `deleted again in round ${round}`);
      await assertState(kg, [base.key, added.key], [], `deleted again ${round}`);
      writeFileSync(file, text);
      assert.ok(
        await eventually(async () => {
          const s = await status(kg);
          return s.file_in_sync && s.last_reload?.result !== 'failure';
        }, HANG_GUARD_MS),
        `round ${round}: the restored file was never seen`,
      );
    }
  });

  await t.test('rewriting identical bytes is skipped: no revision, counted as unchanged', async () => {
    const s0 = await status(kg);
    const c0 = await reloadCounts(kg);
    writeInPlace(file, text);
    assert.ok(await eventually(async () => (await reloadCounts(kg)).unchanged > c0.unchanged, HANG_GUARD_MS), 'the identical rewrite was not seen as unchanged');
    const s1 = await status(kg);
    const c1 = await reloadCounts(kg);
    assert.equal(c1.success, c0.success, 'an identical file was applied again');
    assert.equal(s1.applied.revision, s0.applied.revision);
    assert.equal(s1.applied.at, s0.applied.at);
    assert.equal(s1.file_in_sync, true);
  });

  await t.test('SIGHUP forces a reload, of unchanged bytes too, and of a file behind a symlink into another folder', async () => {
    // Unchanged bytes: SIGHUP applies them anyway (not skipped as unchanged).
    const before = await status(kg);
    kg.child.kill('SIGHUP');
    assert.ok(
      await eventually(async () => {
        const r = (await status(kg)).last_reload;
        return r !== null && r.trigger === 'SIGHUP' && r.result === 'success' && r.at !== before.last_reload?.at;
      }),
      `SIGHUP with an unchanged file: ${JSON.stringify(await status(kg))}`,
    );
    // config.yml becomes a symlink to a file in another folder: edits of that
    // file make no event in the watched folder itself.
    const other = tempDir(t);
    const real = other.path('real.yml');
    writeFileSync(real, text);
    const link = tmp.path('.config-link');
    symlinkSync(real, link);
    const c0 = await reloadCounts(kg);
    renameSync(link, file);
    // The swap itself is seen (same bytes: unchanged).
    assert.ok(await eventually(async () => (await reloadCounts(kg)).unchanged > c0.unchanged, HANG_GUARD_MS), 'the symlink swap was not seen');
    const added = { name: 'step-hup', key: keyFor('watch step hup') };
    const removed = current[1] as KeySpec;
    current = [base, ...current.slice(2), added];
    text = render(up.url, current, settings);
    writeInPlace(real, text);
    const at0 = (await status(kg)).last_reload?.at;
    kg.child.kill('SIGHUP');
    await assertEnforced(kg, [base.key, added.key], [removed.key as string], 'SIGHUP');
    assert.ok(
      await eventually(async () => {
        const r = (await status(kg)).last_reload;
        return r !== null && r.trigger === 'SIGHUP' && r.result === 'success' && r.at !== at0;
      }, HANG_GUARD_MS),
      `/status does not show the SIGHUP reload: ${JSON.stringify(await status(kg))}\n${kg.stderr().split('\n').filter((l) => /reload event|config applied|SIGHUP/.test(l)).slice(-30).join('\n')}`,
    );
    assert.equal(kg.child.exitCode, null, 'SIGHUP stopped the daemon');
  });

  await t.test('stops cleanly and never printed a key', async () => {
    assert.equal(await kg.stop(), 0);
    assertNoSecrets(kg.stdout() + kg.stderr(), 'serve output');
  });
});

test('a Kubernetes ConfigMap ..data symlink swap is seen, with the default debounce', async (t) => {
  const up = await echoUpstream(t);
  const mount = tempDir(t);
  const dbDir = tempDir(t);
  const file = mount.path('config.yml');
  let generation = 0;
  let current = '';
  /** Kubelet's atomic writer: a new timestamped folder, a `..data_tmp` symlink to it renamed over `..data`, the old folder removed. */
  const publish = (text: string): void => {
    generation++;
    const ts = `..2026_01_01_00_00_0${generation}.00000000${generation}`;
    mkdirSync(mount.path(ts));
    writeFileSync(path.join(mount.path(ts), 'config.yml'), text);
    symlinkSync(ts, mount.path('..data_tmp'));
    renameSync(mount.path('..data_tmp'), mount.path('..data'));
    if (current !== '') rmSync(mount.path(current), { recursive: true, force: true });
    current = ts;
  };
  const a = keyFor('k8s a');
  const b = keyFor('k8s b');
  const c = keyFor('k8s c');
  const d = keyFor('k8s d');
  publish(render(up.url, [{ name: 'a', key: a }, { name: 'b', key: b }]));
  symlinkSync('..data/config.yml', file);
  const kg = await startServe(t, file, { args: ['--db', dbDir.path('keygate.db')] });

  await t.test('serves the file behind the symlink chain', async () => {
    await assertState(kg, [a, b], [c], 'start');
  });

  await t.test('a swap of ..data admits the new key and refuses the removed one', async () => {
    const text = render(up.url, [{ name: 'a', key: a }, { name: 'c', key: c }]);
    publish(text);
    await assertEnforced(kg, [a, c], [b], 'first ..data swap');
    await waitApplied(kg, text, 'first ..data swap');
  });

  await t.test('a swap to an invalid file changes nothing, and the next valid swap is applied', async () => {
    const bad = render(up.url, [{ name: 'a', key: a }, { name: 'd', key: d, group: 'no-such-group' }]);
    publish(bad);
    await waitFailure(kg, sha(bad), /unknown group/, 'invalid ..data swap');
    await assertState(kg, [a, c], [d], 'after an invalid swap');
    const good = render(up.url, [{ name: 'a', key: a }, { name: 'd', key: d }]);
    publish(good);
    await assertEnforced(kg, [a, d], [c], 'second ..data swap');
    assert.equal((await waitApplied(kg, good, 'second ..data swap')).file_in_sync, true);
  });

  await t.test('stops cleanly and never printed a key', async () => {
    assert.equal(await kg.stop(), 0);
    assertNoSecrets(kg.stdout() + kg.stderr(), 'serve output');
  });
});

// ---------------------------------------------------------------------------
// 2. Last good wins

test('a reload that fails changes nothing, is reported, and the next valid file is applied', async (t) => {
  const up = await echoUpstream(t);
  const tmp = tempDir(t);
  const file = tmp.path('config.yml');
  const ENV_KEY = keyFor('env provided key');
  const env = { KEYGATE_TEST_ENV_KEY: ENV_KEY };
  // 20 bulk keys, so that the deletion guard's default limit (10) is what counts.
  const bulk: KeySpec[] = Array.from({ length: 20 }, (_, i) => ({ name: `bulk-${String(i).padStart(2, '0')}`, key: keyFor(`bulk ${i}`) }));
  let extra: KeySpec[] = [{ name: 'templated', template: 'KEYGATE_TEST_ENV_KEY' }];
  const good = (): string => render(up.url, [...bulk, ...extra]); // default debounce
  let text = good();
  writeFileSync(file, text);
  const kg = await startServe(t, file, { args: ['--db', tmp.path('keygate.db')], env });
  const working = (): string[] => [...bulk.map((k) => k.key as string), ENV_KEY, ...extra.flatMap((k) => (k.key === undefined ? [] : [k.key]))];
  const noise = tmp.path('notes.txt');
  let n = 0;

  /**
   * One failing case: `breakIt` puts a bad file in place (declaring `newKey`
   * when it can); nothing may change; /status, /metrics and the log report it
   * once; then a valid file declaring `newKey` is applied.
   */
  const failingCase = async (
    what: string,
    breakIt: (newKey: KeySpec) => { sha: string | null },
    error: RegExp,
    restore: () => void = () => undefined,
  ): Promise<void> => {
    n++;
    const newKey: KeySpec = { name: `new-${n}`, key: keyFor(`failing case ${n} new key`) };
    const before = await status(kg);
    assert.equal(before.file_in_sync, true, `${what}: not in sync before the case`);
    const c0 = await reloadCounts(kg);
    const logs0 = logLines(kg, RELOAD_FAILED).length;
    const keepWorking = working();

    const { sha: badSha } = breakIt(newKey);
    const s = await waitFailure(kg, badSha, error, what);
    assert.equal(s.file_in_sync, false, `${what}: file_in_sync`);
    assert.equal(s.last_reload?.result, 'failure');
    assert.equal(s.applied.sha256, before.applied.sha256, `${what}: the applied SHA-256 changed`);
    assert.equal(s.applied.revision, before.applied.revision, `${what}: a revision was recorded`);
    assertNoSecrets(JSON.stringify(s), `${what}: /status`);
    const c1 = await reloadCounts(kg);
    assert.ok(c1.failure > c0.failure, `${what}: keygate_reloads_total{result="failure"} did not grow`);
    assert.equal(c1.success, c0.success, `${what}: counted as a success`);
    assert.equal(c1.lastSuccess, 0, `${what}: keygate_last_reload_success`);

    await assertState(kg, keepWorking, [newKey.key as string], what);

    // More events and a SIGHUP, each waited for: the same failure again, not logged again.
    assert.ok(await eventually(() => logLines(kg, RELOAD_FAILED).length > logs0, HANG_GUARD_MS), `${what}: the failure was not logged`);
    /** Counts the failures so far, then does `cause`, and waits for one more reload attempt. */
    const attempt = async (why: string, cause: () => void): Promise<void> => {
      const want = (await reloadCounts(kg)).failure + 1;
      cause();
      assert.ok(
        await eventually(async () => (await reloadCounts(kg)).failure >= want, HANG_GUARD_MS),
        `${what}: ${why} caused no reload attempt (${JSON.stringify(await reloadCounts(kg))})`,
      );
    };
    await attempt('an event in the folder', () => writeFileSync(noise, `${what}\n`));
    await attempt('SIGHUP', () => kg.child.kill('SIGHUP'));
    await attempt('another event', () => writeFileSync(noise, `${what} again\n`));
    await assertState(kg, keepWorking, [newKey.key as string], `${what} (after more attempts)`);
    const lines = logLines(kg, RELOAD_FAILED).slice(logs0);
    assert.equal(lines.length, 1, `${what}: logged ${lines.length} times, want once:\n${lines.map((l) => JSON.stringify(l)).join('\n')}`);
    assertNoSecrets(JSON.stringify(lines), `${what}: the log line`);
    assert.equal(lines[0]?.level, 50, `${what}: logged at level ${String(lines[0]?.level)}, want error (50)`);
    await assertState(kg, keepWorking, [newKey.key as string], `${what} (after more events)`);

    // The file becomes valid again: it is applied.
    restore();
    extra = [...extra, newKey];
    text = good();
    writeRenameOver(file, text);
    await assertEnforced(kg, [...keepWorking, newKey.key as string], [], `${what}: recovery`);
    const after = await waitApplied(kg, text, `${what}: recovery`);
    assert.equal(after.file_in_sync, true);
    assert.equal(after.last_reload?.result, 'success');
    assert.equal(after.last_reload?.error, null);
    const c2 = await reloadCounts(kg);
    assert.ok(c2.success > c1.success, `${what}: the recovery was not counted as a success`);
    assert.equal(c2.lastSuccess, 1, `${what}: keygate_last_reload_success after the recovery`);
  };

  /** The good file plus `newKey` entry lines, as text: the start of most bad files. */
  const withEntry = (lines: string[]): string => `${good()}${lines.join('\n')}\n`;
  const writeBad = (bytes: string | Buffer): { sha: string } => {
    writeRenameOver(file, bytes);
    return { sha: sha(bytes) };
  };

  await t.test('serves the start file, with the templated key', async () => {
    await assertState(kg, working(), [], 'start');
    const s = await status(kg);
    assert.equal(s.file_in_sync, true);
    assert.equal(s.last_reload?.result, 'success');
    assert.equal((await reloadCounts(kg)).lastSuccess, 1);
  });

  await t.test('a YAML syntax error keeps the last good keys', async () => {
    await failingCase(
      'syntax error',
      (k) => writeBad(withEntry([`    - name: ${k.name}`, '      group: team', `      key: "${k.key as string}`, '      description: [unclosed'])),
      /YAML syntax/i,
    );
  });

  await t.test('a schema error keeps the last good keys', async () => {
    const secretish = keyFor('schema case secret');
    await failingCase(
      'schema error',
      (k) =>
        writeBad(
          withEntry([
            `    - name: ${k.name}`,
            '      group: team',
            `      key: ${JSON.stringify(k.key)}`,
            '    - name: spaced',
            '      group: team',
            `      key: "${secretish} with spaces"`,
            '      colour: blue',
          ]),
        ),
      /api-keys/,
    );
  });

  await t.test('an unknown group keeps the last good keys (fail closed)', async () => {
    await failingCase(
      'unknown group',
      (k) => writeBad(withEntry([`    - name: ${k.name}`, '      group: analysts-typo', `      key: ${JSON.stringify(k.key)}`])),
      /unknown group/,
    );
  });

  await t.test('a missing environment variable keeps the last good keys and is named in the error', async () => {
    await failingCase(
      'missing env var',
      (k) =>
        writeBad(
          withEntry([
            `    - name: ${k.name}`,
            '      group: team',
            `      key: ${JSON.stringify(k.key)}`,
            '    - name: from-env',
            '      group: team',
            '      key: "{{env KEYGATE_TEST_NOT_SET}}"',
          ]),
        ),
      /KEYGATE_TEST_NOT_SET/,
    );
  });

  await t.test('invalid UTF-8 keeps the last good keys', async () => {
    await failingCase(
      'invalid UTF-8',
      (k) =>
        writeBad(
          // The new key's value carries two bytes that are not UTF-8.
          Buffer.concat([
            Buffer.from(`${good()}    - name: ${k.name}\n      group: team\n      key: "${k.key as string}`),
            Buffer.from([0xff, 0xfe]),
            Buffer.from('"\n'),
          ]),
        ),
      /UTF-8/,
    );
  });

  await t.test('a reload refused by the deletion guard keeps every key', async () => {
    await failingCase(
      'deletion guard',
      (k) => writeBad(render(up.url, [...bulk.slice(11), ...extra, k])),
      /delet/i,
    );
  });

  await t.test('a deleted file keeps the last good keys', async () => {
    await failingCase(
      'file deleted',
      () => {
        unlinkSync(file);
        return { sha: null };
      },
      /not found|deleted/i,
    );
  });

  await t.test('an unreadable file (a folder in its place) keeps the last good keys', async () => {
    await failingCase(
      'unreadable',
      () => {
        unlinkSync(file);
        mkdirSync(file);
        return { sha: null };
      },
      /EISDIR|cannot read|unreadable/i,
      () => rmSync(file, { recursive: true, force: true }),
    );
  });

  await t.test('a file restored to the applied bytes after a failure is in sync, and last_reload_success is 1 again', async () => {
    const c0 = await reloadCounts(kg);
    unlinkSync(file);
    await waitFailure(kg, null, /not found|deleted/i, 'deleted before restore');
    assert.equal((await reloadCounts(kg)).lastSuccess, 0);
    writeFileSync(file, text);
    assert.ok(
      await eventually(async () => {
        const s = await status(kg);
        return s.file_in_sync && s.last_reload?.result !== 'failure';
      }),
      `/status after restoring the applied bytes: ${JSON.stringify(await status(kg))}`,
    );
    const s = await status(kg);
    assert.equal(s.last_reload?.error, null);
    const c1 = await reloadCounts(kg);
    assert.ok(c1.unchanged > c0.unchanged, 'the restore was not counted as unchanged');
    await assertState(kg, working(), [], 'after the restore');
    assert.equal(
      c1.lastSuccess,
      1,
      'keygate_last_reload_success stays 0 although /status says the file is in sync and the last attempt did not fail',
    );
  });

  await t.test('the same failure happening again after the file came back is logged again', async () => {
    // The previous case deleted the file once (logged) and restored the applied bytes.
    const logs0 = logLines(kg, RELOAD_FAILED).length;
    unlinkSync(file);
    await waitFailure(kg, null, /not found|deleted/i, 'deleted again');
    const logged = await eventually(() => logLines(kg, RELOAD_FAILED).length > logs0, HANG_GUARD_MS);
    writeFileSync(file, text);
    await eventually(async () => (await status(kg)).file_in_sync);
    assert.ok(logged, 'a second, separate deletion of the file was never logged (it was the same error as the previous incident)');
  });

  await t.test('stops cleanly and never printed a key or the env value', async () => {
    assert.equal(await kg.stop(), 0);
    assertNoSecrets(kg.stdout() + kg.stderr(), 'serve output');
  });
});

// ---------------------------------------------------------------------------
// 3 and 4. Revocation, expiry, and a storm of edits under traffic

test('revocation is immediate, expiry needs no reload, and a storm of edits never breaks a request', async (t) => {
  const up = await echoUpstream(t);
  const tmp = tempDir(t);
  const file = tmp.path('config.yml');
  const settings = { reload_debounce_ms: 10 };
  const stayer = { name: 'stayer', key: keyFor('storm stayer') };
  writeFileSync(file, render(up.url, [stayer], settings));
  const kg = await startServe(t, file, { args: ['--db', tmp.path('keygate.db')] });
  const soon = { name: 'soon', key: keyFor('storm soon'), expires: '' };

  await t.test('a key whose expires_at passes while serving stops working at that time, without a reload', async () => {
    // Far enough ahead that the file is applied before it (a hang guard: a 2-key file takes milliseconds).
    const expiresAtMs = Date.now() + 8000;
    soon.expires = new Date(expiresAtMs).toISOString();
    const withSoon = render(up.url, [stayer, soon], settings);
    writeInPlace(file, withSoon);
    await waitApplied(kg, withSoon, 'expiring key added');
    const s0 = await status(kg);
    const c0 = await reloadCounts(kg);
    // Every answer is set against when it was asked: answered before expires_at must be
    // 200, asked at or after it must be 401; in between, either (the check ran at some moment then).
    const answers: Array<{ sent: number; answered: number; status: number; error: string | null }> = [];
    assert.ok(
      await eventually(
        async () => {
          const sent = Date.now();
          const r = await get(kg.proxy, '/api/x', soon.key);
          const error = r.status === 200 ? null : (JSON.parse(r.text) as { error: string }).error;
          answers.push({ sent, answered: Date.now(), status: r.status, error });
          return r.status !== 200;
        },
        HANG_GUARD_MS,
        10,
      ),
      'the key was never refused after its expires_at',
    );
    assert.ok(
      answers.some((a) => a.answered < expiresAtMs && a.status === 200),
      `no request was answered before expires_at (the file took longer than 8 s to apply): ${JSON.stringify(answers.slice(0, 3))}`,
    );
    for (const a of answers) {
      if (a.answered < expiresAtMs) assert.equal(a.status, 200, `a request answered ${expiresAtMs - a.answered} ms before expires_at was refused`);
      if (a.sent >= expiresAtMs) assert.deepEqual([a.status, a.error], [401, 'invalid_api_key'], `a request sent ${a.sent - expiresAtMs} ms after expires_at`);
    }
    const last = answers.at(-1);
    assert.deepEqual([last?.status, last?.error], [401, 'invalid_api_key']);
    assert.equal((await get(kg.proxy, '/api/x', stayer.key)).status, 200);
    const s1 = await status(kg);
    const c1 = await reloadCounts(kg);
    assert.deepEqual(c1, c0, 'a reload ran');
    assert.equal(s1.applied.revision, s0.applied.revision);
  });

  await t.test('the very next request after a reload that deletes, disables or expires a key is refused', async () => {
    const victims = {
      deleted: { name: 'v-deleted', key: keyFor('victim deleted') },
      disabled: { name: 'v-disabled', key: keyFor('victim disabled') },
      expired: { name: 'v-expired', key: keyFor('victim expired') },
    };
    const v1 = render(up.url, [stayer, victims.deleted, victims.disabled, victims.expired], settings);
    writeInPlace(file, v1);
    await assertEnforced(kg, [stayer.key, victims.deleted.key, victims.disabled.key, victims.expired.key], [soon.key], 'victims added');
    await waitApplied(kg, v1, 'victims added');

    // Clients hammer every victim key while the revoking file is applied.
    const log: Array<{ key: string; sent: number; status: number }> = [];
    let run = true;
    const hammer = async (key: string): Promise<void> => {
      while (run) {
        const sent = Date.now();
        const r = await get(kg.proxy, '/api/x', key, keepAlive);
        log.push({ key, sent, status: r.status });
      }
    };
    const hammers = Object.values(victims).map((v) => hammer(v.key));
    let appliedSeenAt = 0;
    let next: number[] = [];
    try {
      assert.ok(await eventually(() => log.length >= 3, HANG_GUARD_MS), 'the clients sent nothing');
      const v2 = render(up.url, [stayer, { ...victims.disabled, disabled: true }, { ...victims.expired, expires: '2020-01-01T00:00:00Z' }], settings);
      writeInPlace(file, v2);
      await eventually(
        async () => {
          if ((await status(kg)).applied.sha256 !== sha(v2)) return false;
          appliedSeenAt = Date.now();
          return true;
        },
        HANG_GUARD_MS,
        2,
      );
      // The very next request with each key, from a fresh connection.
      next = await Promise.all(Object.values(victims).map(async (v) => (await get(kg.proxy, '/api/x', v.key)).status));
      // And every hammer gets some more answers on its kept-alive connections.
      const sentAfter = (): number => new Set(log.filter((e) => e.sent > appliedSeenAt).map((e) => e.key)).size;
      await eventually(() => appliedSeenAt > 0 && sentAfter() === 3, HANG_GUARD_MS);
    } finally {
      run = false;
      await Promise.allSettled(hammers);
    }
    assert.ok(appliedSeenAt > 0, 'the revoking file was never applied');
    assert.deepEqual(next, [401, 401, 401], 'the first requests after the reload was applied');
    const late = log.filter((e) => e.sent > appliedSeenAt);
    assert.ok(late.length >= 3, 'no request was sent after the reload was applied');
    const admitted = late.filter((e) => e.status !== 401);
    assert.equal(admitted.length, 0, `requests sent after the revoking reload was applied were answered ${admitted.map((e) => e.status).join(', ')}`);
    assert.equal((await get(kg.proxy, '/api/x', stayer.key)).status, 200);
  });

  await t.test('50 quick edits under continuous traffic: no 5xx, every answer matches one file version, the last version wins', async () => {
    const STABLE = keyFor('storm stable');
    const VERSIONS = 50;
    const rot = Array.from({ length: VERSIONS + 1 }, (_, j) => keyFor(`storm rot ${j}`));
    const UNKNOWN = keyFor('storm unknown');
    const parity = (i: number): 'even' | 'odd' => (i % 2 === 0 ? 'even' : 'odd');
    /** Version i: every key in group even or odd by i's parity; rotating keys i-2..i. */
    const present = (i: number, key: string): boolean => {
      if (key === STABLE) return true;
      const j = rot.indexOf(key);
      return j >= 0 && j <= i && j >= i - 2;
    };
    const version = (i: number): string =>
      render(
        up.url,
        [{ name: 'stable', key: STABLE, group: parity(i) }, ...rot.flatMap((k, j) => (present(i, k) ? [{ name: `rot-${j}`, key: k, group: parity(i) }] : []))],
        settings,
      );
    /** What version i answers for `key` on `urlPath`: status and, when forwarded, the group the upstream saw. */
    const expected = (i: number, key: string, urlPath: string): { status: number; group: string | null } => {
      if (!present(i, key)) return { status: 401, group: null };
      return urlPath.startsWith(`/${parity(i)}/`) ? { status: 200, group: parity(i) } : { status: 403, group: null };
    };

    const v0 = version(0);
    writeInPlace(file, v0);
    await waitApplied(kg, v0, 'storm version 0');
    await assertEnforced(kg, [STABLE], [], 'storm version 0', '/even/x');
    const c0 = await reloadCounts(kg);

    interface Seen {
      key: string;
      path: string;
      status: number;
      group: string | null;
      error?: string;
    }
    const seen: Seen[] = [];
    const keys = [STABLE, STABLE, ...rot, UNKNOWN];
    let run = true;
    const client = async (seed: number): Promise<void> => {
      let i = seed;
      while (run) {
        i = (i * 7919 + 104729) % 1_000_003;
        const key = keys[i % keys.length] as string;
        const urlPath = i % 3 === 0 ? '/odd/x' : '/even/x';
        try {
          const r = await get(kg.proxy, urlPath, key, keepAlive);
          let group: string | null = null;
          if (r.status === 200) group = (JSON.parse(r.text) as { group: string | null }).group;
          seen.push({ key, path: urlPath, status: r.status, group });
        } catch (err) {
          seen.push({ key, path: urlPath, status: 0, group: null, error: (err as Error).message });
          if (seen.filter((s) => s.status === 0).length > 20) return;
          await sleep(5);
        }
      }
    };
    const clients = [1, 2, 3, 4, 5, 6].map((s) => client(s));
    const final = version(VERSIONS);
    let finalApplied = false;
    try {
      assert.ok(await eventually(() => seen.length > 0, HANG_GUARD_MS), 'the clients sent nothing');
      for (let i = 1; i <= VERSIONS; i++) {
        const text = version(i);
        if (i % 2 === 0) writeInPlace(file, text);
        else writeRenameOver(file, text);
        // Paced like a busy tool, so that edits land before, during and after reloads.
        await sleep(5 + (i % 4) * 5);
      }
      const sentBefore = seen.length;
      finalApplied = await eventually(async () => (await status(kg)).applied.sha256 === sha(final), HANG_GUARD_MS);
      // Traffic goes on a little after the last version is in place.
      await eventually(() => seen.length >= Math.max(200, sentBefore + 50), HANG_GUARD_MS);
    } finally {
      run = false;
      await Promise.allSettled(clients);
    }

    const c1 = await reloadCounts(kg);
    t.diagnostic(
      `${VERSIONS} edits; ${seen.length} requests; reloads: ${c1.success - c0.success} applied, ` +
        `${c1.failure - c0.failure} failed, ${c1.unchanged - c0.unchanged} unchanged`,
    );
    assert.ok(seen.length >= 200, `only ${seen.length} requests were sent during the storm`);
    assert.ok(c1.success - c0.success >= 2, 'the storm was applied in fewer than two reloads: nothing was in flight during a reload');
    const broken = seen.filter((s) => s.status === 0 || s.status >= 500 || s.status === 429);
    assert.equal(broken.length, 0, `broken answers: ${JSON.stringify(broken.slice(0, 5))}`);
    const wrong = seen.filter((s) => {
      for (let i = 0; i <= VERSIONS; i++) {
        const e = expected(i, s.key, s.path);
        if (e.status === s.status && e.group === s.group) return false;
      }
      return true;
    });
    assert.equal(
      wrong.length,
      0,
      `answers consistent with no file version: ${JSON.stringify(wrong.slice(0, 5).map((w) => ({ ...w, key: `rot-${rot.indexOf(w.key)}` })))}`,
    );
    assert.equal(seen.filter((s) => s.key === STABLE && s.status === 401).length, 0, 'the stable key was refused: an empty or partial snapshot served');

    // The final state is the final file.
    if (!finalApplied) {
      const stuck = await status(kg);
      // Any later event in the folder makes the daemon read the file again.
      writeFileSync(tmp.path('poke.txt'), 'poke');
      const afterPoke = await eventually(async () => (await status(kg)).applied.sha256 === sha(final));
      assert.fail(
        `the final version was never applied (file_in_sync=${String(stuck.file_in_sync)}, ` +
          `last_reload=${JSON.stringify(stuck.last_reload)}); after an unrelated event in the folder it ${afterPoke ? 'was' : 'still was not'}: ` +
          'the watch lost the last change event',
      );
    }
    assert.equal((await status(kg)).file_in_sync, true);
    for (const key of [STABLE, ...rot, UNKNOWN]) {
      for (const urlPath of ['/even/x', '/odd/x']) {
        const r = await get(kg.proxy, urlPath, key);
        const e = expected(VERSIONS, key, urlPath);
        const group = r.status === 200 ? (JSON.parse(r.text) as { group: string | null }).group : null;
        assert.deepEqual({ status: r.status, group }, e, `final state of ${key === STABLE ? 'stable' : `rot-${rot.indexOf(key)}`} on ${urlPath}`);
      }
    }
  });

  await t.test('stops cleanly and never printed a key', async () => {
    keepAlive.destroy();
    assert.equal(await kg.stop(), 0);
    assertNoSecrets(kg.stdout() + kg.stderr(), 'serve output');
  });
});
