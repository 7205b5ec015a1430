/**
 * The CLI on a terminal and off it: readable log lines and a coloured plan on
 * a terminal, JSON logs and plain text in pipes (as the other tests and log
 * shippers read them), `--log-format` / KEYGATE_LOG_FORMAT to choose, NO_COLOR
 * and FORCE_COLOR respected. A terminal is a real pty (`script`) where the
 * machine has one; otherwise the same behaviour is reached with FORCE_COLOR
 * and --log-format pretty. Secrets stay redacted in readable lines too.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { test, type TestContext } from 'node:test';
import { Writable } from 'node:stream';
import { rootLogger } from '../src/cli/logger.ts';
import { BIN, REPO, runCli, shown } from './helpers/cli.ts';
import { applyText } from './helpers/db.ts';
import { ADMIN_KEY, BOT_KEY, NEW_KEY, baseConfig, withoutBot } from './helpers/fixtures.ts';
import { tempConfig } from './helpers/tmp.ts';

// eslint-disable-next-line no-control-regex
const ESC = /\u001b\[/;
// eslint-disable-next-line no-control-regex
const plain = (s: string): string => s.replace(/\u001b\[\d+m/g, '').replace(/\r\n/g, '\n');
const SECRET = 'kg_log_secret_0123456789abcdefghijklmn';

const HAS_SCRIPT = spawnSync('script', ['-qfc', 'true', '/dev/null'], { stdio: 'ignore' }).status === 0;

function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { LANG: 'C.UTF-8', TERM: 'xterm' };
  for (const name of ['PATH', 'HOME', 'TMPDIR']) if (process.env[name] !== undefined) e[name] = process.env[name];
  return { ...e, ...extra };
}

const quote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

/** Runs keygate with stdout and stderr on a real terminal (a pty through `script`); resolves with what the terminal showed. */
function onTerminal(args: readonly string[], opts: { cwd: string; env?: Record<string, string> }): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const command = [process.execPath, BIN, ...args].map(quote).join(' ');
    const child = spawn('script', ['-qfec', command, '/dev/null'], { cwd: opts.cwd, env: env(opts.env), stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => (output += c.toString('utf8')));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

interface Daemon {
  child: ChildProcess;
  output: () => string;
  /** Resolves once the output matches `re` (rejects if keygate exits first). */
  until: (re: RegExp) => Promise<RegExpExecArray>;
  stop: () => Promise<number | null>;
}

/**
 * `keygate serve` on a terminal (`script`, with the shell's pid printed first so that
 * keygate itself can be stopped with SIGTERM), or with plain pipes.
 */
function serve(t: TestContext, config: string, opts: { terminal: boolean; args?: string[]; env?: Record<string, string> }): Daemon {
  const args = ['serve', '-c', config, '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', ...(opts.args ?? [])];
  const child = opts.terminal
    ? spawn('script', ['-qfec', `sh -c 'echo "PID=$$"; exec "$0" "$@"' ${[process.execPath, BIN, ...args].map(quote).join(' ')}`, '/dev/null'], {
        cwd: REPO,
        env: env(opts.env),
        stdio: ['ignore', 'pipe', 'pipe'],
      })
    : spawn(process.execPath, [BIN, ...args], { cwd: REPO, env: env(opts.env), stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const waiters: Array<() => void> = [];
  const onData = (c: Buffer): void => {
    out += c.toString('utf8');
    for (const w of waiters.splice(0)) w();
  };
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  void exited.then(() => {
    for (const w of waiters.splice(0)) w();
  });
  const pid = async (): Promise<number> => (opts.terminal ? Number((await until(/PID=(\d+)/))[1]) : (child.pid as number));
  const until = (re: RegExp): Promise<RegExpExecArray> =>
    new Promise((resolve, reject) => {
      const guard = setTimeout(() => reject(new Error(`no ${String(re)} in time:\n${out}`)), 30_000);
      const check = (): void => {
        const m = re.exec(plain(out));
        if (m !== null) {
          clearTimeout(guard);
          resolve(m);
        } else if (child.exitCode !== null || child.signalCode !== null) {
          clearTimeout(guard);
          reject(new Error(`keygate exited before ${String(re)}:\n${out}`));
        } else waiters.push(check);
      };
      check();
    });
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(await pid(), 'SIGKILL');
      } catch {
        // gone
      }
      child.kill('SIGKILL');
      await exited;
    }
  });
  return {
    child,
    output: () => out,
    until,
    stop: async () => {
      process.kill(await pid(), 'SIGTERM');
      return exited;
    },
  };
}

test('in a pipe, serve logs one JSON object per line (what log shippers and these tests read)', async (t) => {
  const c = tempConfig(t, baseConfig());
  const d = serve(t, c.config, { terminal: false, args: ['--db', c.db] });
  await d.until(/"msg":"keygate serving"/);
  assert.equal(await d.stop(), 0);
  const logs = d.output().split('\n').filter((l) => l.startsWith('{'));
  assert.ok(logs.length >= 3, d.output());
  for (const l of logs) assert.equal(typeof (JSON.parse(l) as { msg?: unknown }).msg, 'string');
  assert.doesNotMatch(d.output(), ESC, 'no colour in a pipe');
});

test('--log-format pretty writes readable lines: time, level, component, message, then the key fields', async (t) => {
  const c = tempConfig(t, baseConfig());
  const d = serve(t, c.config, { terminal: false, args: ['--db', c.db, '--log-format', 'pretty'] });
  const serving = await d.until(/^\d\d:\d\d:\d\d\.\d{3} INFO {2}\[daemon\] keygate serving {2}listen=(127\.0\.0\.1:\d+) admin_listen=\S+ upstream=demo /m);
  const r = await fetch(`http://${serving[1]}/api/card/1`, { headers: { 'x-api-key': BOT_KEY } });
  assert.equal(r.status, 200);
  await r.arrayBuffer();
  assert.equal(await d.stop(), 0);
  const out = d.output();
  assert.match(out, /^\d\d:\d\d:\d\d\.\d{3} INFO {2}\[daemon\] config applied {2}trigger=start revision=1 .*create=3 /m);
  assert.match(out, /^ {6}create key "CI bot"$/m, 'the changes, one a line');
  assert.match(out, /^\d\d:\d\d:\d\d\.\d{3} INFO {2}\[proxy\] request {2}method=GET path=\/api\/card\/1 status=200 outcome=forwarded duration_ms=[\d.]+ key_id=\d+ key_name="CI bot" peer=127\.0\.0\.1$/m);
  assert.match(out, /^\d\d:\d\d:\d\d\.\d{3} INFO {2}\[daemon\] stopped$/m);
  assert.doesNotMatch(out, /^\{/m, 'no JSON line');
  assert.doesNotMatch(out, ESC, 'no colour: stderr is not a terminal and FORCE_COLOR is not set');
  assert.ok(!out.includes(BOT_KEY) && !out.includes(ADMIN_KEY));
});

test('KEYGATE_LOG_FORMAT chooses the format too; --log-format wins over it; a bad value is refused', async (t) => {
  const c = tempConfig(t, baseConfig());
  const d = serve(t, c.config, { terminal: false, args: ['--db', c.db, '--log-format', 'json'], env: { KEYGATE_LOG_FORMAT: 'pretty' } });
  await d.until(/"msg":"keygate serving"/);
  assert.equal(await d.stop(), 0);
  const e = serve(t, c.config, { terminal: false, args: ['--db', c.db], env: { KEYGATE_LOG_FORMAT: 'pretty' } });
  await e.until(/\[daemon\] keygate serving/);
  assert.equal(await e.stop(), 0);
  const [flag, variable] = await Promise.all([
    runCli(['serve', '-c', c.config, '--log-format', 'yaml']),
    runCli(['serve', '-c', c.config], { env: { KEYGATE_LOG_FORMAT: 'text' } }),
  ]);
  assert.equal(flag.code, 1, shown(flag));
  assert.equal(flag.stderr, 'error: keygate serve: --log-format must be pretty or json, got "yaml"; see `keygate serve --help`\n');
  assert.equal(variable.code, 1, shown(variable));
  assert.match(variable.stderr, /^error: KEYGATE_LOG_FORMAT must be pretty or json \(got "text"\)$/m);
});

test('readable lines never show what pino redacts (the formatter reads only the redacted JSON)', () => {
  const lines: string[] = [];
  const sink = { write: (s: string): boolean => lines.push(s) > 0 };
  for (const format of ['pretty', 'json'] as const) {
    const log = rootLogger({}, { format, destination: sink, colour: true });
    log.info({ key: SECRET, headers: { 'x-api-key': SECRET }, authorization: `Bearer ${SECRET}`, nested: { unmasked_key: SECRET } }, 'secret fields');
    log.error({ err: Object.assign(new Error('boom'), { code: 'ECONNREFUSED' }), key_name: 'visible-name' }, 'a failure');
  }
  const text = lines.join('');
  assert.ok(!text.includes(SECRET), text);
  assert.equal(text.match(/\[redacted\]/g)?.length, 8, text);
  assert.match(plain(text), /ERROR \[?.*a failure {2}err=boom code=ECONNREFUSED reason="connection refused: nothing listens there" key_name=visible-name/);
  assert.ok(text.includes('visible-name'), 'positive control: other fields do show');
});

test('the plan is coloured with FORCE_COLOR (+ green, ~ yellow, - red) and plain in a pipe', async (t) => {
  const c = tempConfig(t, withoutBot().replace('description: Read-only', 'description: Read-only, now'));
  await applyText(c.db, baseConfig());
  c.rewrite(
    withoutBot().replace('description: Read-only', 'description: Read-only, now') +
      `    - name: Reporting\n      group: analysts\n      key: ${NEW_KEY}\n`,
  );
  const [coloured, piped, noColor, forcedOff] = await Promise.all([
    runCli(['plan', '-c', c.config, '--db', c.db], { env: { FORCE_COLOR: '1' } }),
    runCli(['plan', '-c', c.config, '--db', c.db]),
    runCli(['plan', '-c', c.config, '--db', c.db], { env: { NO_COLOR: '1' } }),
    runCli(['plan', '-c', c.config, '--db', c.db], { env: { FORCE_COLOR: '0' } }),
  ]);
  assert.equal(coloured.code, 2, shown(coloured));
  const out = coloured.stdout;
  assert.match(out, /^\u001b\[32m\+ create key "Reporting" .*\u001b\[39m$/m);
  assert.match(out, /^\u001b\[33m~ update group "analysts": description .*\u001b\[39m$/m);
  assert.match(out, /^\u001b\[31m- delete key "CI bot" .*\u001b\[39m$/m);
  assert.equal(plain(out), piped.stdout, 'the same text, coloured');
  for (const r of [piped, noColor, forcedOff]) {
    assert.equal(r.code, 2, shown(r));
    assert.doesNotMatch(r.stdout + r.stderr, ESC, shown(r));
  }
  assert.ok(!out.includes(NEW_KEY) && !out.includes(BOT_KEY));
});

test('on a real terminal: readable coloured logs and a coloured plan; NO_COLOR and KEYGATE_LOG_FORMAT=json are respected', { skip: !HAS_SCRIPT && 'no `script` to make a pty' }, async (t) => {
  const c = tempConfig(t, baseConfig());
  const plan = await onTerminal(['plan', '-c', c.config, '--db', c.db], { cwd: c.dir });
  assert.equal(plan.code, 2, plan.output);
  assert.match(plan.output, /\u001b\[32m\+ create key "CI bot"/);
  const planNoColor = await onTerminal(['plan', '-c', c.config, '--db', c.db], { cwd: c.dir, env: { NO_COLOR: '1' } });
  assert.equal(planNoColor.code, 2, planNoColor.output);
  assert.doesNotMatch(planNoColor.output, ESC);
  assert.match(planNoColor.output, /^\+ create key "CI bot"/m);

  const pretty = serve(t, c.config, { terminal: true, args: ['--db', c.db] });
  await pretty.until(/INFO {2}\[daemon\] keygate serving/);
  assert.equal(await pretty.stop(), 0);
  assert.match(pretty.output(), /\u001b\[32mINFO \u001b\[39m \u001b\[36m\[daemon\]/, 'levels and components in colour');
  assert.doesNotMatch(pretty.output(), /^\{"level"/m);

  const calm = serve(t, c.config, { terminal: true, args: ['--db', c.db], env: { NO_COLOR: '1' } });
  await calm.until(/INFO {2}\[daemon\] keygate serving/);
  assert.equal(await calm.stop(), 0);
  assert.doesNotMatch(calm.output(), ESC, 'NO_COLOR: readable lines without colour');

  const json = serve(t, c.config, { terminal: true, args: ['--db', c.db], env: { KEYGATE_LOG_FORMAT: 'json' } });
  await json.until(/"msg":"keygate serving"/);
  assert.equal(await json.stop(), 0);
  assert.match(json.output(), /^\{"level":30,/m);
});
