import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { REPO } from './helpers/cli.ts';
import { tempDir } from './helpers/tmp.ts';

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

test('bin/keygate.js compiles src/ into build/ on first run, reuses it, and recompiles when a source changes', (t) => {
  const root = copyOfPackage(tempDir(t).dir);
  assert.equal(existsSync(path.join(root, 'build')), false);

  const first = run(root, ['--version'], { KEYGATE_DEBUG_BUILD: '1' });
  assert.equal(first.code, 0, first.stderr);
  assert.match(first.stdout, /^keygate \d+\.\d+\.\d+/);
  assert.equal(first.stderr, '', 'no fallback to tsx');
  const stamp = readFileSync(path.join(root, 'build', '.stamp'), 'utf8');
  assert.match(stamp, /^[0-9a-f]{64}$/);
  // The compiled tree imports .js files, never .ts ones.
  const compiled = readFileSync(path.join(root, 'build', 'cli', 'main.js'), 'utf8');
  assert.doesNotMatch(compiled.split('//# sourceMappingURL')[0] as string, /from\s*["']\.{1,2}\/[^"']+\.ts["']/);

  // A real command through the compiled tree: validate a config (schema file, config loader, semantic checks).
  writeFileSync(path.join(root, 'config.yml'), 'version: 1\nconfig:\n  groups:\n    - name: readers\n  api-keys:\n    - name: a\n      group: readers\n      key: kg_build_test_key_0123456789abcdef\n');
  const valid = run(root, ['validate', '-c', 'config.yml']);
  assert.equal(valid.code, 0, valid.stderr);
  assert.match(valid.stdout, /valid \(1 key/);

  // Unchanged sources: the build is reused as it is.
  assert.equal(run(root, ['--version']).code, 0);
  assert.equal(readFileSync(path.join(root, 'build', '.stamp'), 'utf8'), stamp);

  // An edited source is recompiled before it runs.
  const mainTs = path.join(root, 'src', 'cli', 'main.ts');
  const text = readFileSync(mainTs, 'utf8');
  assert.ok(text.includes('`keygate ${'), 'main.ts prints "keygate <version>"');
  writeFileSync(mainTs, text.replace('`keygate ${', '`keygate-edited ${'));
  const edited = run(root, ['--version']);
  assert.equal(edited.code, 0, edited.stderr);
  assert.match(edited.stdout, /^keygate-edited /);
  assert.notEqual(readFileSync(path.join(root, 'build', '.stamp'), 'utf8'), stamp);

  // KEYGATE_NO_BUILD=1 runs the TypeScript through tsx instead, with the same result.
  const viaTsx = run(root, ['validate', '-c', 'config.yml'], { KEYGATE_NO_BUILD: '1' });
  assert.equal(viaTsx.code, 0, viaTsx.stderr);
  assert.equal(viaTsx.stdout, valid.stdout);
});
