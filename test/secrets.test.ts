/**
 * Secrets (design §1 and §2): a key, whether written in the file or expanded
 * from {{env NAME}}, never appears in any output or in the database files;
 * a templated value never appears in a diagnostic.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { openSqliteStore } from '../src/store/sqlite.ts';
import { formatDiagnostic, load, sha256, yaml } from './helpers/config.ts';
import { runCli, shown, type CliResult } from './helpers/cli.ts';
import { databaseFiles } from './helpers/db.ts';
import { tempConfig } from './helpers/tmp.ts';

const TEMPLATED = 'tmpl_S3cretFromEnv_9f8e7d6c5b4a';
const LITERAL = 'lit_S3cretInTheFile_1a2b3c4d5e';
const ROTATED = 'lit_RotatedS3cret_0z9y8x7w6v';

function secretsConfig(literal: string): string {
  return yaml`
    version: 1
    config:
      groups:
        - name: analysts
      api-keys:
        - name: Templated
          group: analysts
          key: "{{env TEMPLATED_SECRET}}"
        - name: Literal
          group: admin
          key: ${literal}
  `;
}

function assertNotShown(runs: ReadonlyArray<{ label: string; r: CliResult }>, secrets: readonly string[]): void {
  for (const { label, r } of runs) {
    for (const s of secrets) {
      assert.ok(!r.stdout.includes(s), `${label}: stdout shows a secret\n${shown(r)}`);
      assert.ok(!r.stderr.includes(s), `${label}: stderr shows a secret\n${shown(r)}`);
    }
  }
}

describe('keys never leave as plaintext', () => {
  test('validate, plan, apply and keys list never print a key, and the database files never hold one', async (t) => {
    const c = tempConfig(t, secretsConfig(LITERAL));
    const env = { TEMPLATED_SECRET: TEMPLATED };
    const run = async (label: string, ...args: string[]): Promise<{ label: string; r: CliResult }> => {
      const r = await runCli(args, { cwd: c.dir, env });
      return { label, r };
    };

    // A connection held open keeps the -wal file from being folded back and
    // removed when each CLI run closes, so its bytes can be searched too.
    await openSqliteStore(c.db).close();
    const holder = new Database(c.db);
    t.after(() => holder.close());
    holder.prepare('SELECT count(*) FROM groups').get();

    // Runs that only read go side by side; the order of the rest matters.
    const runs: Array<{ label: string; r: CliResult }> = await Promise.all([
      run('validate', 'validate', '-c', 'config.yml'),
      run('validate --json', 'validate', '-c', 'config.yml', '--json'),
      run('plan', 'plan', '-c', 'config.yml'),
      run('plan --json', 'plan', '-c', 'config.yml', '--json'),
    ]);
    runs.push(await run('apply', 'apply', '-c', 'config.yml'));
    runs.push(
      ...(await Promise.all([
        run('keys list', 'keys', 'list', '-c', 'config.yml'),
        run('keys list --json', 'keys', 'list', '-c', 'config.yml', '--json'),
      ])),
    );
    c.rewrite(secretsConfig(ROTATED));
    runs.push(await run('plan after rotation', 'plan', '-c', 'config.yml'));
    runs.push(await run('apply --json after rotation', 'apply', '-c', 'config.yml', '--json'));

    const codes = runs.map(({ label, r }) => [label, r.code]);
    assert.deepEqual(codes, [
      ['validate', 0],
      ['validate --json', 0],
      ['plan', 2],
      ['plan --json', 2],
      ['apply', 0],
      ['keys list', 0],
      ['keys list --json', 0],
      ['plan after rotation', 2],
      ['apply --json after rotation', 0],
    ]);
    assert.match(runs.find((x) => x.label === 'plan after rotation')?.r.stdout ?? '', /~ update key "Literal": key lit_S3c… → lit_Rot…/);

    const secrets = [TEMPLATED, LITERAL, ROTATED];
    assertNotShown(runs, secrets);

    const files = databaseFiles(c.db);
    assert.ok(files.some((f) => f.file.endsWith('-wal') && f.bytes.length > 0), 'the -wal file was searched');
    const all = Buffer.concat(files.map((f) => f.bytes));
    for (const digest of [sha256(TEMPLATED), sha256(ROTATED)]) {
      assert.ok(all.includes(Buffer.from(digest)), 'the digests are stored, so the search reads real rows');
    }
    for (const { file, bytes } of files) {
      for (const s of secrets) assert.ok(!bytes.includes(Buffer.from(s)), `${file} holds a plaintext key`);
    }

    holder.close();
    for (const { file, bytes } of databaseFiles(c.db)) {
      for (const s of secrets) assert.ok(!bytes.includes(Buffer.from(s)), `${file} holds a plaintext key after a checkpoint`);
    }
  });
});

describe('templated values never appear in diagnostics', () => {
  const ENV = {
    SECRET_NAME: 'name-Zq1-secret',
    SECRET_GROUP: 'group-Zq2-secret',
    SECRET_CREATOR: 'creator-Zq3-secret@example.com',
    SECRET_SHORT_KEY: 'short-Zq4',
    SECRET_SPACED_KEY: 'spaced Zq5 secret value',
    SECRET_EXPIRY: '2031-02-30T00:00:00Z',
    SECRET_WEAK_KEY: 'weak-Zq6-secret',
  };
  const INVALID = yaml`
    version: 1
    config:
      users:
        - email: cam@example.com
      api-keys:
        - name: "{{env SECRET_NAME}}"
          group: "{{env SECRET_GROUP}}"
          creator: "{{env SECRET_CREATOR}}"
          key: "{{env SECRET_SHORT_KEY}}"
        - name: "{{env SECRET_NAME}}"
          group: admin
          key: "{{env SECRET_SPACED_KEY}}"
          expires_at: "{{env SECRET_EXPIRY}}"
        - name: Weak
          group: admin
          key: "{{env SECRET_WEAK_KEY}}"
  `;

  test('an invalid file reports problems with templated values without showing them', async (t) => {
    const c = tempConfig(t, INVALID);
    const runs = await Promise.all(
      [['validate'], ['validate', '--json'], ['plan'], ['apply', '--json']].map(async (args) => ({
        label: args.join(' '),
        r: await runCli([...args, '-c', 'config.yml'], { cwd: c.dir, env: ENV }),
      })),
    );
    for (const { r } of runs) assert.equal(r.code, 1, shown(r));
    assertNotShown(runs, Object.values(ENV));

    // The problems are reported all the same.
    const result = load(INVALID, ENV);
    assert.equal(result.ok, false);
    const errors = result.ok ? [] : result.errors;
    const codes = errors.map((e) => `${e.path} ${e.code}`);
    for (const want of [
      'api-keys[0].group unknown_group',
      'api-keys[0].creator unknown_creator',
      'api-keys[0].key schema.format',
      'api-keys[1].name duplicate_name',
      'api-keys[1].key schema.format',
      'api-keys[1].expires_at invalid_time',
    ]) {
      assert.ok(codes.includes(want), `${want} in:\n${errors.map(formatDiagnostic).join('\n')}`);
    }
    assert.match(errors.find((e) => e.code === 'unknown_group')?.message ?? '', /unknown group \(value from an environment template\)/);
    assert.deepEqual(
      result.warnings.map((w) => `${w.path} ${w.code}`),
      ['api-keys[2].key weak_key'],
    );
  });

  test('a templated allow path is not quoted in an error about it', () => {
    const secretPath = '/internal/Zq7-secret*';
    const result = load(
      yaml`
        version: 1
        config:
          groups:
            - name: analysts
              allow:
                - paths: ["{{env SECRET_PATH}}"]
          api-keys: []
      `,
      { SECRET_PATH: secretPath },
    );
    const shownText = [...(result.ok ? [] : result.errors), ...result.warnings].map(formatDiagnostic).join('\n');
    assert.ok(!shownText.includes(secretPath), `a templated value is shown:\n${shownText}`);
  });
});
