/**
 * How keygate's TypeScript becomes the JavaScript `bin/keygate.js` runs
 * (bin/build.js, docs/cli.md "How keygate runs"): compiled by npm's `prepare`
 * and `prepack` scripts, never at run time in an installed package; compiled
 * anew in a git checkout whose sources were edited; and no build that a
 * running process uses is ever removed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { REPO } from './helpers/cli.ts';
import { tempDir } from './helpers/tmp.ts';
import { eventually, startServe } from './helpers/serve.ts';

/** The files of a package as npm would have them: bin, src, schemas, package.json (no build yet). */
const PACKAGE_PARTS = ['bin', 'src', 'schemas', 'package.json'];

/** A copy of the package with the real node_modules linked in; `git: true` makes it a git checkout. */
function copyOfPackage(dir: string, opts: { git?: boolean } = {}): string {
  for (const part of PACKAGE_PARTS) cpSync(path.join(REPO, part), path.join(dir, part), { recursive: true });
  symlinkSync(path.join(REPO, 'node_modules'), path.join(dir, 'node_modules'));
  if (opts.git === true) {
    const init = spawnSync('git', ['init', '-q', dir], { encoding: 'utf8' });
    assert.equal(init.status, 0, init.stderr);
  }
  return dir;
}

const baseEnv = (): Record<string, string> => ({ PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '' });

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(root: string, args: string[], env: Record<string, string> = {}, cwd = root): Ran {
  const r = spawnSync(process.execPath, [path.join(root, 'bin', 'keygate.js'), ...args], { cwd, env: { ...baseEnv(), ...env }, encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** An npm script, run the way npm runs it (`npm run NAME` in the package's folder). */
function npmRun(root: string, script: string): Ran {
  const r = spawnSync('npm', ['run', '--silent', script], { cwd: root, env: baseEnv(), encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The finished builds in build/ (temporary folders excluded). */
const builds = (root: string): string[] => (existsSync(path.join(root, 'build')) ? readdirSync(path.join(root, 'build')).filter((n) => /^[0-9a-f]{16}$/.test(n)).sort() : []);

/** Every file and folder of the package except node_modules, with its size and modification time: any write shows. */
function snapshot(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      if (entry.name === 'node_modules' || entry.name === '.git') continue;
      const p = path.join(dir, entry.name);
      const s = statSync(p);
      out.push(`${path.relative(root, p)} ${entry.isDirectory() ? 'dir' : s.size} ${s.mtimeMs}`);
      if (entry.isDirectory()) walk(p);
    }
  };
  walk(root);
  return out.sort();
}

function mkdirOf(dir: string): string {
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** Changes the text `keygate --version` prints, in the package's sources. */
function editVersionText(root: string, to: string): void {
  const mainTs = path.join(root, 'src', 'cli', 'main.ts');
  const text = readFileSync(mainTs, 'utf8');
  assert.ok(text.includes('`keygate ${'), 'main.ts prints "keygate <version>"');
  writeFileSync(mainTs, text.replace('`keygate ${', `\`${to} \${`));
}

const CONFIG = (names: string[]): string =>
  `version: 1\nconfig:\n  groups:\n    - name: readers\n  api-keys:\n${names.map((n) => `    - name: ${n}\n      group: readers\n      key: kg_build_test_${n}_0123456789abcdef\n`).join('')}`;

test('npm\'s prepare script compiles src/ into build/<id>/, and keygate then runs that build without writing anything into the package', (t) => {
  const root = copyOfPackage(tempDir(t).dir);
  writeFileSync(path.join(root, 'config.yml'), CONFIG(['a']));

  const prepare = npmRun(root, 'prepare');
  assert.equal(prepare.code, 0, prepare.stderr);
  assert.match(prepare.stdout, /compiled \d+ files into build\/[0-9a-f]{16}/);
  const [built] = builds(root);
  assert.ok(built !== undefined, 'no build/<id>/ was made');
  // The compiled tree imports .js files, never .ts ones.
  const compiled = readFileSync(path.join(root, 'build', built, 'cli', 'main.js'), 'utf8');
  assert.doesNotMatch(compiled.split('//# sourceMappingURL')[0] as string, /from\s*["']\.{1,2}\/[^"']+\.ts["']/);

  const before = snapshot(root);
  const version = run(root, ['--version'], { KEYGATE_DEBUG_BUILD: '1' });
  assert.equal(version.code, 0, version.stderr);
  assert.match(version.stdout, /^keygate \d+\.\d+\.\d+/);
  assert.equal(version.stderr, '', 'it did not run the build');
  // A real command through the compiled tree: the schema file, the config loader and the semantic checks.
  const valid = run(root, ['validate', '-c', 'config.yml'], { KEYGATE_DEBUG_BUILD: '1' });
  assert.equal(valid.code, 0, valid.stderr);
  assert.match(valid.stdout, /valid \(1 key/);
  assert.equal(valid.stderr, '');
  assert.deepEqual(snapshot(root), before, 'running keygate changed files in the package');

  // Running prepare again (another npm install) finds the build up to date.
  const again = npmRun(root, 'prepare');
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout, /is up to date/);
  assert.deepEqual(builds(root), [built]);

  // KEYGATE_NO_BUILD=1 runs the TypeScript through tsx instead, with the same result.
  const viaTsx = run(root, ['validate', '-c', 'config.yml'], { KEYGATE_NO_BUILD: '1' });
  assert.equal(viaTsx.code, 0, viaTsx.stderr);
  assert.equal(viaTsx.stdout, valid.stdout);
});

test('an installed package whose sources were edited, or that was never built, runs its sources through tsx and compiles nothing into itself', (t) => {
  const root = copyOfPackage(tempDir(t).dir);
  assert.equal(npmRun(root, 'prepare').code, 0);
  const shipped = builds(root);
  assert.equal(shipped.length, 1);

  editVersionText(root, 'keygate-patched');
  const before = snapshot(root);
  const edited = run(root, ['--version'], { KEYGATE_DEBUG_BUILD: '1' });
  assert.equal(edited.code, 0, edited.stderr);
  assert.match(edited.stdout, /^keygate-patched /, 'the edit is not what ran');
  assert.match(edited.stderr, /running through tsx: no build of these sources/);
  assert.deepEqual(snapshot(root), before, 'keygate wrote into an installed package');

  // Installed with scripts disabled: no build at all, and keygate still runs.
  rmSync(path.join(root, 'build'), { recursive: true });
  const unbuilt = run(root, ['--version']);
  assert.equal(unbuilt.code, 0, unbuilt.stderr);
  assert.match(unbuilt.stdout, /^keygate-patched /);
  assert.equal(existsSync(path.join(root, 'build')), false);
});

test('in a git checkout, an edited source is compiled into a new build before keygate runs, beside the previous one', (t) => {
  const root = copyOfPackage(tempDir(t).dir, { git: true });
  assert.equal(npmRun(root, 'prepare').code, 0);
  const [first] = builds(root);

  editVersionText(root, 'keygate-edited');
  const edited = run(root, ['--version'], { KEYGATE_DEBUG_BUILD: '1' });
  assert.equal(edited.code, 0, edited.stderr);
  assert.match(edited.stdout, /^keygate-edited /);
  assert.match(edited.stderr, /compiled the edited sources into build\/[0-9a-f]{16}/);
  assert.doesNotMatch(edited.stderr, /tsx/);
  assert.equal(builds(root).length, 2);
  assert.ok(builds(root).includes(first as string), 'the previous build was removed');

  // The next run finds that build: nothing more is compiled.
  const again = run(root, ['--version'], { KEYGATE_DEBUG_BUILD: '1' });
  assert.match(again.stdout, /^keygate-edited /);
  assert.equal(again.stderr, '');
  assert.equal(builds(root).length, 2);
});

test('packed by npm pack and installed as a dependency, with esbuild hoisted to the project\'s node_modules, keygate runs the build it was shipped with', (t) => {
  const tmp = tempDir(t);
  const source = copyOfPackage(mkdirOf(tmp.path('source')));
  // npm pack runs prepack (and prepare): the tarball carries the build.
  const pack = spawnSync('npm', ['pack', '--json', '--pack-destination', tmp.dir], { cwd: source, env: baseEnv(), encoding: 'utf8', timeout: 120_000 });
  assert.equal(pack.status, 0, pack.stderr);
  const [packed] = JSON.parse(pack.stdout.slice(pack.stdout.indexOf('['))) as { filename: string; files: { path: string }[] }[];
  assert.ok(packed !== undefined);
  const files = packed.files.map((f) => f.path);
  assert.ok(files.some((f) => /^build\/[0-9a-f]{16}\/cli\/main\.js$/.test(f)), 'the tarball has no build');
  assert.ok(files.includes('src/cli/main.ts') && files.includes('schemas/config.schema.json'));
  assert.ok(!files.some((f) => f.startsWith('test/') || f.startsWith('node_modules/')));

  // npm's usual layout: PROJECT/node_modules/keygate without a node_modules of its own, and its
  // dependencies (esbuild and tsx among them) beside it in PROJECT/node_modules.
  const project = mkdirOf(tmp.path('project'));
  const modules = mkdirOf(path.join(project, 'node_modules'));
  const pkg = mkdirOf(path.join(modules, 'keygate'));
  const untar = spawnSync('tar', ['-xzf', path.join(tmp.dir, packed.filename), '-C', pkg, '--strip-components=1'], { encoding: 'utf8' });
  assert.equal(untar.status, 0, untar.stderr);
  for (const dep of readdirSync(path.join(REPO, 'node_modules'))) {
    if (!dep.startsWith('.')) symlinkSync(path.join(REPO, 'node_modules', dep), path.join(modules, dep));
  }
  writeFileSync(path.join(project, 'config.yml'), CONFIG(['a']));
  const before = snapshot(pkg);
  const valid = run(pkg, ['validate', '-c', 'config.yml'], { KEYGATE_DEBUG_BUILD: '1' }, project);
  assert.equal(valid.code, 0, valid.stderr);
  assert.match(valid.stdout, /valid \(1 key/);
  assert.equal(valid.stderr, '', 'it did not run the shipped build');
  assert.deepEqual(snapshot(pkg), before, 'keygate wrote into the installed package');

  // Rebuilding there by hand (after an edit, say) finds the hoisted esbuild.
  rmSync(path.join(pkg, 'build'), { recursive: true });
  const rebuild = spawnSync(process.execPath, [path.join(pkg, 'bin', 'build.js')], { cwd: project, env: baseEnv(), encoding: 'utf8', timeout: 60_000 });
  assert.equal(rebuild.status, 0, rebuild.stderr);
  assert.equal(builds(pkg).length, 1);
  const rebuilt = run(pkg, ['validate', '-c', 'config.yml'], { KEYGATE_DEBUG_BUILD: '1' }, project);
  assert.equal(rebuilt.code, 0, rebuilt.stderr);
  assert.equal(rebuilt.stderr, '');
});

test('a running daemon keeps reloading with the code it started with after its sources change and are compiled again, and no build it uses is removed', { skip: existsSync('/proc/self/fd') ? false : 'builds in use are seen through /proc' }, async (t) => {
  const root = copyOfPackage(tempDir(t).dir, { git: true });
  assert.equal(npmRun(root, 'prepare').code, 0);
  const [daemonBuild] = builds(root);
  const config = path.join(root, 'config.yml');
  writeFileSync(config, CONFIG(['a']));
  const kg = await startServe(t, config, { bin: path.join(root, 'bin', 'keygate.js'), cwd: root, args: ['--db', path.join(root, 'k.db')] });
  // Sources change (a git pull, an edit) and a command compiles them: this code would fail every reload,
  // and a control plane started again (after a crash, or to give memory back) loads its code from the build.
  const reloadTs = path.join(root, 'src', 'control', 'reconcile-file.ts');
  const original = readFileSync(reloadTs, 'utf8');
  const signature = 'export async function reconcileFile(store: Store, r: FileReconcile): Promise<{ outcome: ReconcileOutcome; desired: DesiredState | null }> {';
  assert.ok(original.includes(signature));
  writeFileSync(reloadTs, original.replace(signature, `${signature}\n  throw new Error('code from the new build');`));
  assert.equal(run(root, ['--version']).code, 0);
  // One more edit, compiled too: that build is used by nobody once the command ends.
  writeFileSync(reloadTs, original.replace(signature, `${signature}\n  throw new Error('code from the newest build');`));
  assert.equal(run(root, ['--version']).code, 0);
  assert.equal(builds(root).length, 3);

  // npm's build (npm install, npm test) removes the unused one and keeps the daemon's.
  const prune = npmRun(root, 'build');
  assert.equal(prune.code, 0, prune.stderr);
  assert.match(prune.stdout, /removed 1 old build, kept 1 that running processes use/);
  assert.equal(builds(root).length, 2);
  assert.ok(builds(root).includes(daemonBuild as string), 'the running daemon\'s build was removed');

  writeFileSync(config, CONFIG(['a', 'b']));
  const status = async (): Promise<{ keys: { total: number }; last_reload: { result: string; error: string | null } | null }> =>
    (await (await fetch(`${kg.admin}/status`)).json()) as { keys: { total: number }; last_reload: { result: string; error: string | null } | null };
  assert.ok(await eventually(async () => (await status()).keys.total === 2), `the edit was not applied: ${JSON.stringify(await status())}`);
  assert.equal((await status()).last_reload?.result, 'success');
  assert.equal(await kg.stop(), 0);

  // Once the daemon has stopped, its build goes at the next build.
  const after = npmRun(root, 'build');
  assert.equal(after.code, 0, after.stderr);
  assert.match(after.stdout, /removed 1 old build/);
  assert.deepEqual(builds(root).includes(daemonBuild as string), false);
  assert.equal(builds(root).length, 1);
});
