import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { REPO } from './helpers/cli.ts';
import { tempDir } from './helpers/tmp.ts';
import { eventually, startServe } from './helpers/serve.ts';

/** A copy of the package (bin, src, schemas, package.json) with the real node_modules linked in. */
function copyOfPackage(dir: string): string {
  for (const part of ['bin', 'src', 'schemas', 'package.json']) cpSync(path.join(REPO, part), path.join(dir, part), { recursive: true });
  symlinkSync(path.join(REPO, 'node_modules'), path.join(dir, 'node_modules'));
  return dir;
}

function run(root: string, args: string[], env: Record<string, string> = {}): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [path.join(root, 'bin', 'keygate.js'), ...args], {
    cwd: root,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env },
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The finished builds in build/ (temporary folders excluded). */
const builds = (root: string): string[] => (existsSync(path.join(root, 'build')) ? readdirSync(path.join(root, 'build')).filter((n) => /^[0-9a-f]{16}$/.test(n)).sort() : []);

const CONFIG = (names: string[]): string =>
  `version: 1\nconfig:\n  groups:\n    - name: readers\n  api-keys:\n${names.map((n) => `    - name: ${n}\n      group: readers\n      key: kg_build_test_${n}_0123456789abcdef\n`).join('')}`;

test('bin/keygate.js compiles src/ into build/<hash>/ on first run, reuses it, and compiles a new one when a source changes', (t) => {
  const root = copyOfPackage(tempDir(t).dir);
  assert.deepEqual(builds(root), []);

  const first = run(root, ['--version'], { KEYGATE_DEBUG_BUILD: '1' });
  assert.equal(first.code, 0, first.stderr);
  assert.match(first.stdout, /^keygate \d+\.\d+\.\d+/);
  assert.equal(first.stderr, '', 'no fallback to tsx');
  const [built] = builds(root);
  assert.ok(built !== undefined, 'no build/<hash>/ was made');
  // The compiled tree imports .js files, never .ts ones.
  const compiled = readFileSync(path.join(root, 'build', built, 'cli', 'main.js'), 'utf8');
  assert.doesNotMatch(compiled.split('//# sourceMappingURL')[0] as string, /from\s*["']\.{1,2}\/[^"']+\.ts["']/);

  // A real command through the compiled tree: the schema file, the config loader and the semantic checks.
  writeFileSync(path.join(root, 'config.yml'), CONFIG(['a']));
  const valid = run(root, ['validate', '-c', 'config.yml']);
  assert.equal(valid.code, 0, valid.stderr);
  assert.match(valid.stdout, /valid \(1 key/);

  // Unchanged sources: the build is reused as it is.
  assert.equal(run(root, ['--version']).code, 0);
  assert.deepEqual(builds(root), [built]);

  // An edited source is compiled into a new build before it runs; the old build stays for processes still using it.
  const mainTs = path.join(root, 'src', 'cli', 'main.ts');
  const text = readFileSync(mainTs, 'utf8');
  assert.ok(text.includes('`keygate ${'), 'main.ts prints "keygate <version>"');
  writeFileSync(mainTs, text.replace('`keygate ${', '`keygate-edited ${'));
  const edited = run(root, ['--version']);
  assert.equal(edited.code, 0, edited.stderr);
  assert.match(edited.stdout, /^keygate-edited /);
  assert.equal(builds(root).length, 2);
  assert.ok(builds(root).includes(built));

  // KEYGATE_NO_BUILD=1 runs the TypeScript through tsx instead, with the same result.
  const viaTsx = run(root, ['validate', '-c', 'config.yml'], { KEYGATE_NO_BUILD: '1' });
  assert.equal(viaTsx.code, 0, viaTsx.stderr);
  assert.equal(viaTsx.stdout, valid.stdout);
});

test('installed as a dependency, with esbuild hoisted to the project\'s node_modules, keygate still compiles and runs its build', (t) => {
  // npm's usual layout: PROJECT/node_modules/keygate without a node_modules of its own, and its
  // dependencies (esbuild among them) beside it in PROJECT/node_modules.
  const project = tempDir(t).dir;
  const modules = path.join(project, 'node_modules');
  const pkg = path.join(modules, 'keygate');
  mkdirSync(pkg, { recursive: true });
  for (const part of ['bin', 'src', 'schemas', 'package.json']) cpSync(path.join(REPO, part), path.join(pkg, part), { recursive: true });
  for (const dep of readdirSync(path.join(REPO, 'node_modules'))) {
    if (!dep.startsWith('.')) symlinkSync(path.join(REPO, 'node_modules', dep), path.join(modules, dep));
  }
  writeFileSync(path.join(project, 'config.yml'), CONFIG(['a']));
  const r = spawnSync(process.execPath, [path.join(pkg, 'bin', 'keygate.js'), 'validate', '-c', 'config.yml'], {
    cwd: project,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', KEYGATE_DEBUG_BUILD: '1' },
    encoding: 'utf8',
    timeout: 60_000,
  });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /valid \(1 key/);
  assert.equal(r.stderr, '', 'it fell back to tsx');
  assert.equal(builds(pkg).length, 1);
});

test('a running daemon keeps reloading with the code it started with, even after another command compiled changed sources', async (t) => {
  const root = copyOfPackage(tempDir(t).dir);
  const config = path.join(root, 'config.yml');
  writeFileSync(config, CONFIG(['a']));
  const kg = await startServe(t, config, { bin: path.join(root, 'bin', 'keygate.js'), cwd: root, args: ['--db', path.join(root, 'k.db')] });
  // Sources change (a git pull, an upgrade) and another command compiles them: this code would fail every reload.
  const reconcileTs = path.join(root, 'src', 'control', 'reconcile-file.ts');
  const marker = 'export async function reconcileFile(store: Store, r: FileReconcile): Promise<{ outcome: ReconcileOutcome; desired: DesiredState | null }> {';
  assert.ok(readFileSync(reconcileTs, 'utf8').includes(marker));
  writeFileSync(reconcileTs, readFileSync(reconcileTs, 'utf8').replace(marker, `${marker}\n  throw new Error('code from the new build');`));
  assert.equal(run(root, ['--version']).code, 0);
  assert.equal(builds(root).length, 2);

  writeFileSync(config, CONFIG(['a', 'b']));
  const status = async (): Promise<{ keys: { total: number }; last_reload: { result: string; error: string | null } | null }> =>
    (await (await fetch(`${kg.admin}/status`)).json()) as { keys: { total: number }; last_reload: { result: string; error: string | null } | null };
  assert.ok(await eventually(async () => (await status()).keys.total === 2), `the edit was not applied: ${JSON.stringify(await status())}`);
  assert.equal((await status()).last_reload?.result, 'success');
  assert.equal(await kg.stop(), 0);
});
