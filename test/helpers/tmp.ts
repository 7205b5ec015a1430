/**
 * Temporary folders for tests: real files under os.tmpdir(), removed when the
 * test that made them ends.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';

export interface TempDir {
  dir: string;
  /** Absolute path of `name` inside the folder. */
  path: (name: string) => string;
  /** Writes `text` to `name` inside the folder and returns its absolute path. */
  write: (name: string, text: string | Buffer) => string;
}

const made = new Set<string>();
const remove = (dir: string): void => rmSync(dir, { recursive: true, force: true });

// node:test runs `after` hooks in the order they were added, so a folder can be
// removed before a process started later in the same test has stopped writing
// to it. Whatever such a process leaves behind goes when the test file exits.
process.once('exit', () => {
  for (const dir of made) remove(dir);
});

/** A fresh folder under os.tmpdir(), removed after the test `t` (and again when the test file exits). */
export function tempDir(t: TestContext): TempDir {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'keygate-test-'));
  made.add(dir);
  t.after(() => remove(dir));
  const at = (name: string): string => path.join(dir, name);
  return {
    dir,
    path: at,
    write: (name, text) => {
      const file = at(name);
      writeFileSync(file, text);
      return file;
    },
  };
}

export interface ConfigDir extends TempDir {
  /** The config file. */
  config: string;
  /** Where tests keep the database: `keygate.db` beside the config. */
  db: string;
  /** Rewrites the config file. */
  rewrite: (text: string) => void;
}

/** A temp folder holding `config.yml` with `text`, and the path of its database. */
export function tempConfig(t: TestContext, text: string, name = 'config.yml'): ConfigDir {
  const tmp = tempDir(t);
  const config = tmp.write(name, text);
  return { ...tmp, config, db: tmp.path('keygate.db'), rewrite: (next) => void writeFileSync(config, next) };
}
