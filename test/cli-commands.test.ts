/**
 * The CLI's other commands as a user runs them (real child processes):
 * validate (text and --json), keys generate / hash / list, schema, --help.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { hasValidChecksum } from '../src/keys/material.ts';
import { posOf, sha256, yaml } from './helpers/config.ts';
import { COMMANDS, type CommandName } from '../src/cli/help.ts';
import { parseJson, REPO, runCli, shown, type CliResult } from './helpers/cli.ts';
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
      `${c.config}: valid (1 key, 2 groups, 1 warning)`,
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
  test('generate prints a new key and an api-keys entry with only its key_hash, which pastes under api-keys: of the example file as is', async (t) => {
    const r = await runCli(['keys', 'generate', '--name', 'CI bot', '--group', 'analysts']);
    assert.equal(r.code, 0, shown(r));
    const key = /^ {2}(kg_\S+)$/m.exec(r.stdout)?.[1];
    assert.ok(key !== undefined, r.stdout);
    assert.match(key, /^kg_[0-9A-Za-z]{49}$/, 'prefix, 43 base62 characters of randomness and a 6-character checksum');
    assert.ok(hasValidChecksum(key), 'the checksum matches');

    const marker = 'Add this entry under config.api-keys:\n\n';
    const entryText = r.stdout.slice(r.stdout.indexOf(marker) + marker.length);
    assert.equal(
      entryText,
      `    - name: "CI bot"\n      group: analysts\n      key_hash: "sha256:${sha256(key)}"\n`,
      'indented as the example files are: entries at 4 spaces',
    );
    assert.ok(!entryText.includes(key), 'the entry does not carry the key');

    // Pasted as is at the end of the example config (whose last section is api-keys), it admits the printed key.
    const example = readFileSync(`${REPO}config.example.yml`, 'utf8');
    assert.match(example, / {2}api-keys:\n(?: {4}.*\n| {6}.*\n)+$/, 'config.example.yml ends with its api-keys list');
    const c = tempConfig(t, example + entryText);
    const apply = await runCli(['apply', '-c', 'config.yml', '--db', c.db], { cwd: c.dir });
    assert.equal(apply.code, 0, shown(apply));
    const row = keyRow(c.db, 'CI bot');
    assert.equal(row.digest, sha256(key));
    assert.equal(row.group_name, 'analysts');
  });

  test('generate --json prints the key, its key_hash and the entry, and nothing else', async () => {
    const r = await runCli(['keys', 'generate', '--json', '--name', 'Nightly export', '--prefix', 'mb_']);
    assert.equal(r.code, 0, shown(r));
    assert.equal(r.stderr, '');
    const doc = parseJson(r) as { key: string; key_hash: string; entry: Record<string, unknown> };
    assert.deepEqual(Object.keys(doc), ['key', 'key_hash', 'entry']);
    assert.match(doc.key, /^mb_[0-9A-Za-z]{49}$/);
    assert.ok(hasValidChecksum(doc.key));
    assert.equal(doc.key_hash, `sha256:${sha256(doc.key)}`);
    assert.deepEqual(doc.entry, { name: 'Nightly export', group: 'all-users', key_hash: doc.key_hash });
  });

  test('generate makes a different key each time and takes a --prefix', async () => {
    const [a, b] = await Promise.all([runCli(['keys', 'generate', '--prefix', 'mb_']), runCli(['keys', 'generate', '--prefix', 'mb_'])]);
    assert.equal(a.code, 0, shown(a));
    const keyOf = (out: string): string | undefined => /^ {2}(mb_\S+)$/m.exec(out)?.[1];
    assert.ok(keyOf(a.stdout) !== undefined && keyOf(b.stdout) !== undefined, a.stdout);
    assert.notEqual(keyOf(a.stdout), keyOf(b.stdout));
    assert.match(a.stdout, /^ {4}- name: "New API key"\n {6}group: all-users\n/m);
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
    assert.match(out[0] ?? '', /^NAME\s+KEY\s+GROUP\s+SOURCE\s+STATUS\s+CREATED\s+LAST USED\s+EXPIRES$/);
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

describe('keys list', () => {
  test('marks expired and disabled keys, and prints every time in UTC, saying so', async (t) => {
    const text = yaml`
      version: 1
      config:
        api-keys:
          - name: Current
            group: all-users
            key: ${BOT_KEY}
            expires_at: 2999-01-01T00:00:00Z
          - name: Lapsed
            group: all-users
            key: ${NEW_KEY}
            expires_at: 2020-02-03T04:05:06+02:00
          - name: Paused
            group: all-users
            key_hash: "sha256:${'ab'.repeat(32)}"
            disabled: true
    `;
    const c = tempConfig(t, text);
    const apply = await runCli(['apply', '-c', 'config.yml'], { cwd: c.dir });
    assert.equal(apply.code, 0, shown(apply));
    const [list, json] = await Promise.all([runCli(['keys', 'list', '--db', c.db]), runCli(['keys', 'list', '--db', c.db, '--json'])]);
    assert.equal(list.code, 0, shown(list));
    const out = lines(list.stdout);
    assert.match(out[0] ?? '', /^NAME\s+KEY\s+GROUP\s+SOURCE\s+STATUS\s+CREATED\s+LAST USED\s+EXPIRES$/);
    const row = (name: string): string => out.find((l) => l.startsWith(`${name} `)) ?? assert.fail(`no row for ${name}:\n${list.stdout}`);
    assert.match(row('Current'), /^Current\s+ci-bot-…\s+All Users\s+config\s+active\s+\d{4}-\d\d-\d\d \d\d:\d\d UTC\s+never\s+2999-01-01 00:00 UTC$/);
    assert.match(row('Lapsed'), /\sexpired\s.*\s2020-02-03 02:05 UTC$/, 'expired, and its time converted to UTC');
    assert.match(row('Paused'), /^Paused\s+\(hash only\)\s+All Users\s+config\s+disabled\s/);
    assert.ok(!list.stdout.includes(BOT_KEY) && !list.stdout.includes(NEW_KEY));

    assert.equal(json.code, 0, shown(json));
    const keys = (parseJson(json) as { keys: Array<{ name: string; expired: boolean; expires_at: string | null }> }).keys;
    assert.deepEqual(
      keys.map((k) => [k.name, k.expired]),
      [
        ['Current', false],
        ['Lapsed', true],
        ['Paused', false],
      ],
    );
    assert.equal(keys.find((k) => k.name === 'Lapsed')?.expires_at, '2020-02-03T02:05:06.000Z');
  });
});

describe('schema and help', () => {
  test('schema prints valid JSON equal to schemas/config.schema.json', async () => {
    const r = await runCli(['schema']);
    assert.equal(r.code, 0, shown(r));
    const file = JSON.parse(readFileSync(`${REPO}schemas/config.schema.json`, 'utf8')) as unknown;
    assert.deepEqual(parseJson(r), file);
  });

  test('--help lists every command with its synopsis and exits 0', async () => {
    const r = await runCli(['--help']);
    assert.equal(r.code, 0, shown(r));
    for (const name of Object.keys(COMMANDS) as CommandName[]) {
      const synopsis = COMMANDS[name].usage.replace(/^keygate /, '');
      assert.ok(r.stdout.includes(`\n  ${synopsis}\n`), `--help shows "${synopsis}":\n${r.stdout}`);
    }
  });

  test('every command and subcommand answers --help with its own synopsis, the one `keygate --help` shows', async () => {
    const names = Object.keys(COMMANDS) as CommandName[];
    const runs = await Promise.all(names.map((n) => runCli([...n.split(' '), '--help'])));
    names.forEach((n, i) => {
      const r = runs[i] as CliResult;
      assert.equal(r.code, 0, `${n} --help: ${shown(r)}`);
      assert.equal(r.stderr, '', n);
      assert.equal(lines(r.stdout)[0], `Usage: ${COMMANDS[n].usage}`, `${n} --help`);
    });
    // `schema --help` is its help, not the schema; `-h`, `help <command>` and `keys --help` answer too.
    const [schemaH, keysH, helpPlan, planAfterFlags] = await Promise.all([
      runCli(['schema', '-h']),
      runCli(['keys', '--help']),
      runCli(['help', 'keys', 'hash']),
      runCli(['plan', '--db', 'x.db', '--frobnicate', '--help']),
    ]);
    assert.equal(schemaH.code, 0, shown(schemaH));
    assert.match(schemaH.stdout, /^Usage: keygate schema\n/);
    assert.doesNotMatch(schemaH.stdout, /"\$schema"/);
    assert.equal(keysH.code, 0, shown(keysH));
    for (const n of ['keys generate', 'keys hash', 'keys list'] as const) assert.ok(keysH.stdout.includes(COMMANDS[n].usage), keysH.stdout);
    assert.equal(helpPlan.code, 0, shown(helpPlan));
    assert.match(helpPlan.stdout, /^Usage: keygate keys hash \[KEY\]\n/);
    assert.equal(planAfterFlags.code, 0, 'help wins over the other arguments');
    assert.match(planAfterFlags.stdout, /^Usage: keygate plan /);
  });

  test('a command\'s --help explains its exit codes and exits 0', async () => {
    const r = await runCli(['plan', '--help']);
    assert.equal(r.code, 0, shown(r));
    assert.match(r.stdout, /^Usage: keygate plan/);
    assert.match(r.stdout, /Exit 0: no changes\. Exit 2: changes\. Exit 1: error\./);
  });

  test('an unknown option exits 1 with a "did you mean" and a pointer to the command\'s --help', async () => {
    const [jsn, allow, listn, short, none] = await Promise.all([
      runCli(['validate', '--jsn']),
      runCli(['apply', '--allow-delete']),
      runCli(['serve', '--listn', '127.0.0.1:0']),
      runCli(['keys', 'list', '-d', 'x.db']),
      runCli(['plan', '--frobnicate']),
    ]);
    for (const r of [jsn, allow, listn, short, none]) {
      assert.equal(r.code, 1, shown(r));
      assert.equal(r.stdout, '', shown(r));
    }
    assert.equal(jsn.stderr, 'error: keygate validate: unknown option --jsn (did you mean --json?); see `keygate validate --help`\n');
    assert.match(allow.stderr, /^error: keygate apply: unknown option --allow-delete \(did you mean --allow-deletes\?\)/);
    assert.match(listn.stderr, /^error: keygate serve: unknown option --listn \(did you mean --listen\?\)/);
    assert.match(short.stderr, /^error: keygate keys list: unknown option -d/);
    assert.equal(none.stderr, 'error: keygate plan: unknown option --frobnicate; see `keygate plan --help`\n');
  });

  test('an unknown command exits 1 with a "did you mean", for commands and for keys subcommands', async () => {
    const [aply, lst, flagFirst, bare, keysBare] = await Promise.all([
      runCli(['aply']),
      runCli(['keys', 'lst']),
      runCli(['--json', 'validate']),
      runCli([]),
      runCli(['keys']),
    ]);
    assert.equal(aply.code, 1, shown(aply));
    assert.equal(aply.stderr, 'error: keygate: unknown command "aply" (did you mean apply?); see `keygate --help`\n');
    assert.equal(lst.code, 1, shown(lst));
    assert.equal(lst.stderr, 'error: keygate keys: unknown command "lst" (did you mean list?); see `keygate keys --help`\n');
    assert.equal(flagFirst.code, 1, shown(flagFirst));
    assert.match(flagFirst.stderr, /options go after the command/);
    // No command at all: the summary, on stderr, and exit 1.
    assert.equal(bare.code, 1, shown(bare));
    assert.equal(bare.stdout, '');
    assert.match(bare.stderr, /^keygate: API keys/);
    assert.equal(keysBare.code, 1, shown(keysBare));
    assert.match(keysBare.stderr, /keygate keys generate/);
  });

  test('extra arguments and options without their value exit 1 and name the problem', async (t) => {
    const c = tempConfig(t, baseConfig());
    const [schemaExtra, schemaFlag, validateFile, noValue, flagAsValue, valueOnBoolean, version] = await Promise.all([
      runCli(['schema', 'extra']),
      runCli(['schema', '--foo']),
      runCli(['validate', 'config.yml'], { cwd: c.dir }),
      runCli(['plan', '-c']),
      runCli(['plan', '--db', '--json'], { cwd: c.dir }),
      runCli(['validate', '--json=yes']),
      runCli(['--version', 'now']),
    ]);
    for (const r of [schemaExtra, schemaFlag, validateFile, noValue, flagAsValue, valueOnBoolean, version]) assert.equal(r.code, 1, shown(r));
    assert.equal(schemaExtra.stdout, '', 'no schema is printed');
    assert.equal(schemaExtra.stderr, 'error: keygate schema: unexpected argument "extra" (it takes none); see `keygate schema --help`\n');
    assert.equal(schemaFlag.stdout, '');
    assert.match(schemaFlag.stderr, /^error: keygate schema: unknown option --foo;/);
    assert.match(validateFile.stderr, /unexpected argument "config\.yml" \(did you mean -c config\.yml\?\)/);
    assert.match(noValue.stderr, /^error: keygate plan: -c needs a value;/);
    assert.match(flagAsValue.stderr, /^error: keygate plan: --db needs a value;/);
    assert.deepEqual(parseJson(flagAsValue), { error: 'KG_ERR_USAGE', message: 'keygate plan: --db needs a value; see `keygate plan --help`' });
    assert.match(valueOnBoolean.stderr, /^error: keygate validate: --json takes no value;/);
    assert.match(version.stderr, /unexpected argument "now"/);
  });

  test('serve refuses a --workers count outside 1-256 and a certificate without its key, before it starts', async () => {
    const runs = await Promise.all([
      runCli(['serve', '--workers', '0']),
      runCli(['serve', '--workers', '300']),
      runCli(['serve', '--workers', 'many']),
      runCli(['serve', '--tls-cert', 'cert.pem']),
    ]);
    for (const r of runs) assert.equal(r.code, 1, shown(r));
    const [zero, over, word, certOnly] = runs as [CliResult, CliResult, CliResult, CliResult];
    assert.equal(zero.stderr, 'error: keygate serve: --workers must be a number from 1 to 256, or "auto", got "0"; see `keygate serve --help`\n');
    assert.match(over.stderr, /--workers must be a number from 1 to 256, or "auto", got "300";/);
    assert.match(word.stderr, /--workers must be a number from 1 to 256, or "auto", got "many";/);
    assert.equal(certOnly.stderr, 'error: keygate serve: --tls-cert and --tls-key go together; see `keygate serve --help`\n');
  });

  test('keys hash refuses a second argument without printing either (they may be keys)', async () => {
    const r = await runCli(['keys', 'hash', NEW_KEY, BOT_KEY]);
    assert.equal(r.code, 1, shown(r));
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /^error: keygate keys hash: takes one key, got 2 arguments/);
    assert.ok(!r.stderr.includes(NEW_KEY) && !r.stderr.includes(BOT_KEY), r.stderr);
  });
});
