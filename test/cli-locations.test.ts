/**
 * Where the CLI looks for the config file and puts the database (design §1
 * and §3), with real child processes run from other working folders.
 */
import assert from 'node:assert/strict';
import { existsSync, statSync } from 'node:fs';
import { describe, test } from 'node:test';
import { runCli, shown } from './helpers/cli.ts';
import { keyNames } from './helpers/db.ts';
import { baseConfig } from './helpers/fixtures.ts';
import { tempConfig, tempDir } from './helpers/tmp.ts';

describe('files and places', () => {
  test('creates the database with mode 0600 beside the config file', async (t) => {
    const c = tempConfig(t, baseConfig());
    const elsewhere = tempDir(t);
    const r = await runCli(['apply', '-c', c.config], { cwd: elsewhere.dir });
    assert.equal(r.code, 0, shown(r));
    assert.equal(statSync(c.db).mode & 0o777, 0o600);
    assert.ok(!existsSync(elsewhere.path('keygate.db')), 'not in the working folder');
  });

  test('resolves a relative keygate.database against the config file\'s folder', async (t) => {
    const text = `version: 1\nconfig:\n  keygate:\n    database: data/keys.sqlite\n  api-keys: []\n`;
    const c = tempConfig(t, text);
    const elsewhere = tempDir(t);
    const r = await runCli(['apply', '-c', c.config], { cwd: elsewhere.dir });
    assert.equal(r.code, 0, shown(r));
    assert.ok(existsSync(c.path('data/keys.sqlite')), shown(r));
    assert.equal(statSync(c.path('data/keys.sqlite')).mode & 0o777, 0o600);
  });

  test('finds the config through MB_CONFIG_FILE_PATH, as Metabase does', async (t) => {
    const c = tempConfig(t, baseConfig(), 'metabase-config.yml');
    const elsewhere = tempDir(t);
    const r = await runCli(['apply'], { cwd: elsewhere.dir, env: { MB_CONFIG_FILE_PATH: c.config } });
    assert.equal(r.code, 0, shown(r));
    assert.deepEqual(keyNames(c.db), ['Admin API key', 'CI bot']);
  });

  test('uses KEYGATE_CONFIG over MB_CONFIG_FILE_PATH, and KEYGATE_DB for the database', async (t) => {
    const keygate = tempConfig(t, baseConfig());
    const metabase = tempConfig(t, 'not: [valid');
    const dbDir = tempDir(t);
    const r = await runCli(['apply'], {
      cwd: dbDir.dir,
      env: { KEYGATE_CONFIG: keygate.config, MB_CONFIG_FILE_PATH: metabase.config, KEYGATE_DB: dbDir.path('chosen.db') },
    });
    assert.equal(r.code, 0, shown(r));
    assert.deepEqual(keyNames(dbDir.path('chosen.db')), ['Admin API key', 'CI bot']);
  });

  test('KEYGATE_DATA_DIR holds the default database, and keygate.database in the file still wins over it', async (t) => {
    const data = tempDir(t);
    const plain = tempConfig(t, baseConfig());
    const r = await runCli(['apply', '-c', plain.config], { cwd: plain.dir, env: { KEYGATE_DATA_DIR: data.dir } });
    assert.equal(r.code, 0, shown(r));
    assert.deepEqual(keyNames(data.path('keygate.db')), ['Admin API key', 'CI bot']);
    assert.ok(!existsSync(plain.db), 'not beside the config file');
    const named = tempConfig(t, `version: 1\nconfig:\n  keygate:\n    database: named.db\n  api-keys: []\n`);
    const other = tempDir(t);
    const n = await runCli(['apply', '-c', named.config], { cwd: named.dir, env: { KEYGATE_DATA_DIR: other.dir } });
    assert.equal(n.code, 0, shown(n));
    assert.ok(existsSync(named.path('named.db')), 'keygate.database is used');
    assert.ok(!existsSync(other.path('keygate.db')), 'KEYGATE_DATA_DIR does not override the file');
  });

  test('falls back to ./config.yml in the working folder', async (t) => {
    const c = tempConfig(t, baseConfig());
    const r = await runCli(['validate'], { cwd: c.dir });
    assert.equal(r.code, 0, shown(r));
    assert.match(r.stdout, /config\.yml: valid \(2 keys/);
  });

  test('says how to give a config when there is none', async (t) => {
    const empty = tempDir(t);
    const r = await runCli(['plan'], { cwd: empty.dir });
    assert.equal(r.code, 1, shown(r));
    assert.match(r.stderr, /no config file: pass --config FILE/);
  });
});
