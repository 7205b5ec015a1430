/**
 * The README's walkthrough, run as written: its ```sh blocks in order, in a
 * temporary copy of the repository's example config, against a real
 * `keygate serve` on free loopback ports (the README's 8080 and 8081 are
 * replaced by them), with `npx keygate` running this repository's bin. Each
 * ```text block after a ```sh block is output that block must print: its
 * lines must appear in that order (other lines may come between).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { BIN, REPO } from './helpers/cli.ts';
import { freePort } from './helpers/serve.ts';
import { tempDir } from './helpers/tmp.ts';

interface Block {
  script: string;
  /** Runs in its own terminal, for the rest of the walkthrough (the daemon). */
  background: boolean;
  expected: string | null;
}

/** The sh blocks between the walkthrough markers, each with the text block that follows it. */
function walkthrough(markdown: string): Block[] {
  const start = markdown.indexOf('<!-- walkthrough:start -->');
  const end = markdown.indexOf('<!-- walkthrough:end -->');
  assert.ok(start !== -1 && end > start, 'README.md marks its walkthrough');
  const lines = markdown.slice(start, end).split('\n');
  const blocks: Block[] = [];
  let background = false;
  let afterSh = false;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] as string;
    const fence = /^```(\w*)\s*$/.exec(line);
    if (fence === null) {
      if (line.trim() === '<!-- readme-test: background -->') background = true;
      else if (line.trim() !== '') afterSh = false;
      continue;
    }
    const body: string[] = [];
    for (i++; i < lines.length && lines[i] !== '```'; i++) body.push(lines[i] as string);
    const text = body.join('\n');
    if (fence[1] === 'sh') {
      blocks.push({ script: text, background, expected: null });
      background = false;
      afterSh = true;
    } else if (fence[1] === 'text' && afterSh) {
      (blocks[blocks.length - 1] as Block).expected = text;
      afterSh = false;
    }
  }
  return blocks;
}

/** Every non-empty line of `expected` appears, trimmed, within a line of `actual`, in order. */
function missingLine(actual: string, expected: string): string | null {
  const have = actual.split('\n');
  let at = 0;
  for (const want of expected.split('\n').map((l) => l.trim())) {
    if (want === '' || want === '…') continue;
    const found = have.findIndex((l, i) => i >= at && l.includes(want));
    if (found === -1) return want;
    at = found + 1;
  }
  return null;
}

/**
 * `npx keygate …` as after `npm install`, without npm: this repository's bin. And the README's
 * `sleep 2` (give keygate a moment to apply the edit) waits for the event instead of the time:
 * until /status shows tmp/config.yml's bytes applied (a hang guard of 60 s), so that a slow
 * machine never fails the walkthrough.
 */
const PREAMBLE = `npx() {
  if [ "$1" = keygate ]; then shift; "$KEYGATE_NODE" "$KEYGATE_BIN" "$@"; else echo "unexpected: npx $*" >&2; return 127; fi
}
sleep() {
  "$KEYGATE_NODE" -e '
    const { createHash } = require("node:crypto");
    const want = createHash("sha256").update(require("node:fs").readFileSync("tmp/config.yml")).digest("hex");
    const end = Date.now() + 60000;
    (async () => {
      while (Date.now() < end) {
        const s = await fetch(process.env.KEYGATE_STATUS).then((r) => r.json()).catch(() => null);
        if (s !== null && s.applied.sha256 === want) return;
        await new Promise((r) => setTimeout(r, 50));
      }
      process.stderr.write("the edit was never applied\\n");
      process.exitCode = 1;
    })();
  '
}
`;

test('the README walkthrough runs as written and prints what it shows', async (t) => {
  const blocks = walkthrough(readFileSync(path.join(REPO, 'README.md'), 'utf8'));
  const [daemon, ...rest] = blocks;
  assert.ok(daemon?.background === true, 'the walkthrough starts keygate in the background first');
  assert.ok(rest.length >= 3 && rest.every((b) => !b.background));

  const proxyPort = await freePort();
  let adminPort = await freePort();
  while (adminPort === proxyPort) adminPort = await freePort();
  const ports = (s: string): string =>
    s.replaceAll('127.0.0.1:8080', `127.0.0.1:${proxyPort}`).replaceAll('127.0.0.1:8081', `127.0.0.1:${adminPort}`);

  // A stand-in for the repository: the example config the walkthrough copies.
  const tmp = tempDir(t);
  const example = readFileSync(path.join(REPO, 'config.example.yml'), 'utf8');
  assert.ok(example.includes('127.0.0.1:8080') && example.includes('127.0.0.1:8081'), 'config.example.yml listens on 8080/8081');
  writeFileSync(tmp.path('config.example.yml'), ports(example));
  const env = {
    LANG: 'C.UTF-8',
    HOME: tmp.dir,
    PATH: `${path.dirname(process.execPath)}${path.delimiter}${process.env.PATH ?? ''}`,
    KEYGATE_NODE: process.execPath,
    KEYGATE_BIN: BIN,
    KEYGATE_STATUS: `http://127.0.0.1:${adminPort}/status`,
  };

  // Terminal 1. Its own process group, so that it can be stopped as Ctrl-C would.
  const server = spawn('bash', ['-c', PREAMBLE + ports(daemon.script)], { cwd: tmp.dir, env, detached: true });
  let out = '';
  let err = '';
  server.stdout.on('data', (c: Buffer) => (out += c.toString('utf8')));
  server.stderr.on('data', (c: Buffer) => (err += c.toString('utf8')));
  const exited = new Promise<number | null>((resolve) => server.once('exit', (code) => resolve(code)));
  const signal = (s: NodeJS.Signals): void => {
    try {
      process.kill(-(server.pid as number), s);
    } catch {
      // already gone
    }
  };
  t.after(async () => {
    if (server.exitCode === null && server.signalCode === null) {
      signal('SIGKILL');
      await exited;
    }
  });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`keygate did not start:\n${out}\n${err}`)), 60_000);
    const check = (): void => {
      // Logged once the proxy, the admin listener and the file watcher are all up.
      if (err.includes('"msg":"keygate serving"')) {
        clearTimeout(timer);
        resolve();
      }
    };
    server.stderr.on('data', check);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`keygate exited with ${String(code)}:\n${out}\n${err}`));
    });
  });

  // Terminal 2: the other blocks in one shell, so that `export KEY=…` carries over.
  // The marker starts on a line of its own: curl -s output may not end with a newline.
  const script = PREAMBLE + rest.map((b, i) => `printf '\\n@@block ${i}@@\\n'\n${ports(b.script)}\n`).join('');
  const terminal = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    const child = spawn('bash', ['-c', script], { cwd: tmp.dir, env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    const timer = setTimeout(() => child.kill('SIGKILL'), 180_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
  const outputs = terminal.stdout.split(/\n@@block \d+@@\n/).slice(1);
  assert.equal(outputs.length, rest.length, `every block ran:\n${terminal.stdout}\n${terminal.stderr}`);
  rest.forEach((b, i) => {
    if (b.expected === null) return;
    const missing = missingLine(outputs[i] as string, ports(b.expected));
    assert.equal(missing, null, `block ${i + 2} of the walkthrough:\n${b.script}\ndid not print ${JSON.stringify(missing)}; it printed:\n${outputs[i]}\nstderr:\n${terminal.stderr}`);
  });
  assert.equal(terminal.stderr, '', 'nothing went wrong on stderr');

  // Step 5: Ctrl-C in terminal 1.
  signal('SIGINT');
  assert.equal(await exited, 0, err);
  const missing = missingLine(out, ports(daemon.expected ?? ''));
  assert.equal(missing, null, `terminal 1 did not print ${JSON.stringify(missing)}; it printed:\n${out}`);
  assert.match(err, /"msg":"config applied"[\s\S]*"trigger":"watch"/, 'the edit was applied by the watcher');
});
