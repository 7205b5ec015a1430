/**
 * The CLI's other commands as a user runs them (real child processes):
 * validate (text and --json), keys generate / hash / list, schema, --help.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { parse as parseYaml } from 'yaml';
import { hasValidChecksum } from '../src/keys/material.ts';
import { posOf, sha256, yaml } from './helpers/config.ts';
import { parseJson, REPO, runCli, shown } from './helpers/cli.ts';
import { applyText, insertApiKey, keyRow } from './helpers/db.ts';
import { baseConfig, BOT_KEY, NEW_KEY } from './helpers/fixtures.ts';
import { tempConfig } from './helpers/tmp.ts';

function lines(text: string): string[] {
  return text.split('\n').filter((l) => l !== '');
}

describe('validate', () => {
  const INVALID = yaml`
    version: 1
    config:
      settings: {site-name: Acme}
      groups:
        - name: analysts
      api-keys:
        - name: Weak
          group: analysts
          key: weak-key-12345
        - name: Typo
          group: analyst
          key: ${BOT_KEY}
          descripton: oops
  `;

  test('exits 0 for a valid file and prints its warnings as FILE:LINE:COL: path: message', async (t) => {
    const text = yaml`
      version: 1
      config:
        api-keys:
          - name: Weak
            group: all-users
            key: weak-key-12345
    `;
    const c = tempConfig(t, text);
    const r = await runCli(['validate', '-c', 'config.yml'], { cwd: c.dir });
    assert.equal(r.code, 0, shown(r));
    const at = posOf(text, 'key: weak', 'weak');
    assert.deepEqual(lines(r.stdout), [
      `warning: config.yml:${at.line}:${at.column}: api-keys[0].key: key is shorter than 20 characters: weak, generate one with \`keygate keys generate\``,
      `${c.config}: valid (1 keys, 2 groups, 1 warnings)`,
    ]);
  });

  test('exits 1 for an invalid file and prints every error as FILE:LINE:COL: path: message', async (t) => {
    const c = tempConfig(t, INVALID);
    const r = await runCli(['validate', '-c', 'config.yml'], { cwd: c.dir });
    assert.equal(r.code, 1, shown(r));
    const group = posOf(INVALID, 'group: analyst', 'analyst', 2);
    const field = posOf(INVALID, 'descripton:', 'descripton');
    const out = lines(r.stdout);
    assert.ok(
      out.includes(
        `error: config.yml:${group.line}:${group.column}: api-keys[1].group: unknown group "analyst" (declared: admin, all-users, analysts)`,
      ),
      r.stdout,
    );
    assert.ok(out.some((l) => l.startsWith(`error: config.yml:${field.line}:${field.column}: api-keys[1].descripton: unknown field "descripton"`)), r.stdout);
    assert.equal(out.filter((l) => l.startsWith('error: ')).length, 2);
    assert.equal(out.at(-1), `${c.config}: invalid (2 errors)`);
  });

  test('--json gives {valid, errors, warnings} with file, line, column, path, code and message', async (t) => {
    const c = tempConfig(t, INVALID);
    const r = await runCli(['validate', '-c', 'config.yml', '--json'], { cwd: c.dir });
    assert.equal(r.code, 1, shown(r));
    const doc = parseJson(r) as { valid: boolean; errors: Array<Record<string, unknown>>; warnings: Array<Record<string, unknown>> };
    assert.deepEqual(Object.keys(doc).sort(), ['errors', 'valid', 'warnings']);
    assert.equal(doc.valid, false);
    for (const d of [...doc.errors, ...doc.warnings]) {
      assert.deepEqual(Object.keys(d).sort(), ['code', 'column', 'file', 'line', 'message', 'path']);
      assert.equal(d.file, 'config.yml');
      assert.equal(typeof d.line, 'number');
      assert.equal(typeof d.column, 'number');
    }
    const group = posOf(INVALID, 'group: analyst', 'analyst', 2);
    assert.deepEqual(
      doc.errors.find((e) => e.code === 'unknown_group'),
      {
        file: 'config.yml',
        line: group.line,
        column: group.column,
        path: 'api-keys[1].group',
        code: 'unknown_group',
        message: 'unknown group "analyst" (declared: admin, all-users, analysts)',
      },
    );
    assert.deepEqual(
      doc.errors.map((e) => e.code).sort(),
      ['schema.unknown_field', 'unknown_group'],
    );
    assert.deepEqual(
      doc.warnings.map((w) => [w.code, w.path]),
      [
        ['ignored_section', 'settings'],
        ['weak_key', 'api-keys[0].key'],
      ],
    );
    assert.equal(r.stdout.trim().split('\n').filter((l) => l.startsWith('{')).length, 1, 'stdout is one JSON document');
  });

  test('--json of a valid file says valid with no errors', async (t) => {
    const c = tempConfig(t, baseConfig());
    const r = await runCli(['validate', '-c', 'config.yml', '--json'], { cwd: c.dir });
    assert.equal(r.code, 0, shown(r));
    assert.deepEqual(parseJson(r), { valid: true, errors: [], warnings: [] });
  });
});

describe('keys', () => {
  test('generate prints a new key and an api-keys entry with only its key_hash, and apply admits that key', async (t) => {
    const r = await runCli(['keys', 'generate', '--name', 'CI bot', '--group', 'analysts']);
    assert.equal(r.code, 0, shown(r));
    const key = /^ {2}(kg_\S+)$/m.exec(r.stdout)?.[1];
    assert.ok(key !== undefined, r.stdout);
    assert.match(key, /^kg_[0-9A-Za-z]{49}$/, 'prefix, 43 base62 characters of randomness and a 6-character checksum');
    assert.ok(hasValidChecksum(key), 'the checksum matches');

    const entryText = r.stdout.slice(r.stdout.indexOf('Add this entry under config.api-keys:') + 'Add this entry under config.api-keys:'.length);
    const entry = parseYaml(entryText) as unknown;
    assert.ok(Array.isArray(entry) && entry.length === 1, entryText);
    const e = entry[0] as Record<string, unknown>;
    assert.deepEqual(Object.keys(e).sort(), ['group', 'key_hash', 'name']);
    assert.equal(e.name, 'CI bot');
    assert.equal(e.group, 'analysts');
    assert.equal(e.key_hash, `sha256:${sha256(key)}`);
    assert.ok(!entryText.includes(key), 'the entry does not carry the key');

    // The printed entry, pasted into a config, admits the printed key.
    const config = `version: 1\nconfig:\n  groups:\n    - name: analysts\n  api-keys:\n${entryText.replace(/^\n+/, '').trimEnd()}\n`;
    const c = tempConfig(t, config);
    const apply = await runCli(['apply', '-c', 'config.yml'], { cwd: c.dir });
    assert.equal(apply.code, 0, shown(apply));
    const row = keyRow(c.db, 'CI bot');
    assert.equal(row.digest, sha256(key));
    assert.equal(row.group_name, 'analysts');
  });

  test('generate makes a different key each time and takes a --prefix', async () => {
    const [a, b] = await Promise.all([runCli(['keys', 'generate', '--prefix', 'mb_']), runCli(['keys', 'generate', '--prefix', 'mb_'])]);
    assert.equal(a.code, 0, shown(a));
    const keyOf = (out: string): string | undefined => /^ {2}(mb_\S+)$/m.exec(out)?.[1];
    assert.ok(keyOf(a.stdout) !== undefined && keyOf(b.stdout) !== undefined, a.stdout);
    assert.notEqual(keyOf(a.stdout), keyOf(b.stdout));
    assert.match(a.stdout, /name: New API key\n\s+group: all-users\n/);
  });

  test('hash prints sha256:… of a key given as an argument or on stdin', async () => {
    const want = `sha256:${sha256(NEW_KEY)}\n`;
    const [arg, stdin] = await Promise.all([runCli(['keys', 'hash', NEW_KEY]), runCli(['keys', 'hash'], { input: `${NEW_KEY}\n` })]);
    assert.equal(arg.code, 0, shown(arg));
    assert.equal(arg.stdout, want);
    assert.equal(stdin.code, 0, shown(stdin));
    assert.equal(stdin.stdout, want);
  });

  test('list shows keys masked, with group and source, as text and as --json', async (t) => {
    const c = tempConfig(t, baseConfig());
    await applyText(c.db, baseConfig());
    insertApiKey(c.db, { name: 'Made in the UI', key: NEW_KEY, group: 'analysts' });

    const [text, json] = await Promise.all([
      runCli(['keys', 'list', '--db', c.db]),
      runCli(['keys', 'list', '--json'], { cwd: c.dir, env: { KEYGATE_CONFIG: c.config } }),
    ]);
    assert.equal(text.code, 0, shown(text));
    const out = lines(text.stdout);
    assert.match(out[0] ?? '', /^NAME\s+KEY\s+GROUP\s+SOURCE\s+CREATED\s+LAST USED\s+EXPIRES$/);
    assert.ok(out.some((l) => /^CI bot\s+ci-bot-…\s+analysts\s+config\s/.test(l)), text.stdout);
    assert.ok(out.some((l) => /^Made in the UI\s+brand-n…\s+analysts\s+api\s/.test(l)), text.stdout);
    assert.ok(out.some((l) => /^Admin API key\s+\S+\s+Administrators\s+config\s/.test(l)), `the admin group is not shown by Metabase's name:\n${text.stdout}`);
    assert.ok(!text.stdout.includes(BOT_KEY) && !text.stdout.includes(NEW_KEY));

    assert.equal(json.code, 0, shown(json));
    const doc = parseJson(json) as { keys: Array<Record<string, unknown>> };
    const bot = doc.keys.find((k) => k.name === 'CI bot');
    assert.equal(bot?.masked_key, `ci-bot-${'*'.repeat(40)}`);
    assert.equal(bot?.group, 'analysts');
    assert.equal(bot?.source, 'config');
    assert.equal(bot?.last_used_at, null);
    assert.equal(doc.keys.find((k) => k.name === 'Made in the UI')?.source, 'api');
    assert.equal(doc.keys.find((k) => k.name === 'Admin API key')?.group, 'Administrators');
    assert.deepEqual(
      doc.keys.map((k) => k.name),
      ['Admin API key', 'CI bot', 'Made in the UI'],
    );
    assert.ok(!json.stdout.includes(BOT_KEY) && !json.stdout.includes(NEW_KEY));
  });
});

describe('schema and help', () => {
  test('schema prints valid JSON equal to schemas/config.schema.json', async () => {
    const r = await runCli(['schema']);
    assert.equal(r.code, 0, shown(r));
    const file = JSON.parse(readFileSync(`${REPO}schemas/config.schema.json`, 'utf8')) as unknown;
    assert.deepEqual(parseJson(r), file);
  });

  test('--help lists the commands and exits 0', async () => {
    const r = await runCli(['--help']);
    assert.equal(r.code, 0, shown(r));
    for (const command of ['validate', 'plan', 'apply', 'serve', 'keys generate', 'keys hash', 'keys list', 'schema']) {
      assert.match(r.stdout, new RegExp(`^ {2}${command} `, 'm'), `--help mentions ${command}`);
    }
  });

  test('a command\'s --help explains its exit codes and exits 0', async () => {
    const r = await runCli(['plan', '--help']);
    assert.equal(r.code, 0, shown(r));
    assert.match(r.stdout, /^Usage: keygate plan/);
    assert.match(r.stdout, /Exit 0: no changes\. Exit 2: changes\. Exit 1: error\./);
  });

  test('an unknown command or option exits 1 with a message on stderr', async () => {
    const [command, option] = await Promise.all([runCli(['aply']), runCli(['plan', '--frobnicate'])]);
    assert.equal(command.code, 1, shown(command));
    assert.match(command.stderr, /unknown command "aply"/);
    assert.equal(option.code, 1, shown(option));
    assert.match(option.stderr, /keygate plan: .*--frobnicate/);
  });
});
