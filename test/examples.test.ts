/**
 * The example files shipped in the repository: Metabase's documented config
 * file must validate and apply unchanged, and keygate's own example must
 * validate.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { loadConfigFile } from '../src/config/load.ts';
import { formatDiagnostic, sha256 } from './helpers/config.ts';
import { REPO, runCli, shown } from './helpers/cli.ts';
import { keyRow, reconcileInto, tables } from './helpers/db.ts';
import { tempDir } from './helpers/tmp.ts';

const METABASE_EXAMPLE = `${REPO}examples/metabase-config-file.yml`;
const KEYGATE_EXAMPLE = `${REPO}config.example.yml`;
const API_KEY_FROM_ENV = 'mb_thirdtestapikeyfromenv';

test('Metabase\'s example config file validates and applies unchanged', async (t) => {
  const before = readFileSync(METABASE_EXAMPLE);
  const db = tempDir(t).path('keygate.db');
  const env = { API_KEY_FROM_ENV };

  const validate = await runCli(['validate', '-c', METABASE_EXAMPLE], { env });
  assert.equal(validate.code, 0, shown(validate));
  assert.match(validate.stdout, /: valid \(3 keys, 2 groups, \d+ warnings\)/);
  assert.doesNotMatch(validate.stdout, /^error:/m);

  const apply = await runCli(['apply', '-c', METABASE_EXAMPLE, '--db', db], { env });
  assert.equal(apply.code, 0, shown(apply));

  const admin = keyRow(db, 'Admin API key');
  assert.equal(admin.group_name, 'admin');
  assert.equal(admin.digest, sha256('mb_firsttestapikey'));
  assert.equal(admin.creator, 'cam@example.com');
  assert.equal(admin.description, 'API key with admin permissions.');
  const allUsers = keyRow(db, 'All Users API key');
  assert.equal(allUsers.group_name, 'all-users');
  assert.equal(allUsers.digest, sha256('mb_secondtestapikey'));
  const fromEnv = keyRow(db, 'ENV API Key');
  assert.equal(fromEnv.group_name, 'admin');
  assert.equal(fromEnv.digest, sha256(API_KEY_FROM_ENV));

  assert.equal(tables(db).revisions[0]?.config_sha256, sha256(before.toString('utf8')));
  assert.ok(readFileSync(METABASE_EXAMPLE).equals(before), 'the example file is left as it was');
});

test('Metabase\'s example config file names API_KEY_FROM_ENV when it is not set', async () => {
  const r = loadConfigFile(METABASE_EXAMPLE, { env: {}, displayName: 'metabase-config-file.yml' });
  assert.equal(r.ok, false);
  assert.deepEqual(
    r.ok ? [] : r.errors.map(formatDiagnostic),
    ['metabase-config-file.yml:23:12: api-keys[2].key: environment variable "API_KEY_FROM_ENV" is not set'],
  );
});

test('config.example.yml validates without warnings and applies', async (t) => {
  const r = loadConfigFile(KEYGATE_EXAMPLE, { env: {} });
  if (!r.ok) assert.fail(r.errors.map(formatDiagnostic).join('\n'));
  assert.deepEqual(r.warnings, []);
  assert.deepEqual(
    r.desired.keys.map((k) => [k.name, k.group]),
    [
      ['Admin API key', 'admin'],
      ['Analyst key', 'analysts'],
    ],
  );
  assert.deepEqual(r.desired.groups.find((g) => g.name === 'analysts')?.allow, [
    { methods: ['GET', 'HEAD'], paths: ['/api/card/**', '/api/dashboard/**'] },
  ]);
  const db = tempDir(t).path('keygate.db');
  const { revision } = await reconcileInto(db, r.desired, { apply: true });
  assert.equal(revision?.created, 3);
});
