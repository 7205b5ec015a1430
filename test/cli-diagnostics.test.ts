/**
 * What `keygate validate` (and plan, apply, serve) say about a broken file, as
 * a user reads it on the terminal: in file order, one diagnostic per mistake,
 * the commonest YAML slips told as what to fix, and counts in good English.
 * Real child processes, real files.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { posOf, yaml } from './helpers/config.ts';
import { runCli, shown } from './helpers/cli.ts';
import { serveExpectingFailure } from './helpers/serve.ts';
import { tempConfig } from './helpers/tmp.ts';

const SECRET = 'kg_secret_from_the_environment_0123456789';

function lines(text: string): string[] {
  return text.split('\n').filter((l) => l !== '');
}

/** The `error:` and `warning:` lines of a run. */
function diagnostics(text: string): string[] {
  return lines(text).filter((l) => l.startsWith('error: ') || l.startsWith('warning: '));
}

async function validate(t: Parameters<typeof tempConfig>[0], text: string, env: Record<string, string> = {}): Promise<{ code: number | null; diags: string[]; stdout: string; all: string }> {
  const c = tempConfig(t, text);
  const r = await runCli(['validate', '-c', 'config.yml'], { cwd: c.dir, env });
  return { code: r.code, diags: diagnostics(r.stdout), stdout: r.stdout, all: shown(r) };
}

describe('diagnostics', () => {
  test('come in file order, errors and warnings together, whichever check found them', async (t) => {
    // Checked in the order: templates, schema, semantics; written in another.
    const text = yaml`
      version: 1
      config:
        keygate:
          listn: 127.0.0.1:8080
        api-keys:
          - name: Weak
            group: all-users
            key: weak-key-12345
          - name: Typo
            group: analyst
            key: "{{env CI_BOT_KEY}}"
    `;
    const r = await validate(t, text);
    assert.equal(r.code, 1, r.all);
    const at = (line: string, value: string): string => {
      const p = posOf(text, line, value);
      return `config.yml:${p.line}:${p.column}`;
    };
    assert.deepEqual(r.diags, [
      `error: ${at('listn:', 'listn')}: keygate.listn: unknown field "listn" (did you mean "listen"?)`,
      `warning: ${at('key: weak', 'weak')}: api-keys[0].key: key is shorter than 20 characters: weak, generate one with \`keygate keys generate\``,
      `error: ${at('group: analyst', 'analyst')}: api-keys[1].group: unknown group "analyst" (declared: admin, all-users)`,
      `error: ${at('key: "{{env', '"{{env')}: api-keys[1].key: environment variable "CI_BOT_KEY" is not set`,
    ]);
    assert.match(r.stdout, /: invalid \(3 errors\)\n$/);
  });

  test('--json lists errors and warnings each in file order', async (t) => {
    const text = yaml`
      version: 1
      config:
        api-keys:
          - name: A
            group: nobody
            key: "{{env MISSING_KEY}}"
          - name: B
            group: all-users
            key: short-key-1234
          - name: A
            group: all-users
            key_hash: "sha256:nothex"
    `;
    const c = tempConfig(t, text);
    const r = await runCli(['validate', '-c', 'config.yml', '--json'], { cwd: c.dir });
    assert.equal(r.code, 1, shown(r));
    const doc = JSON.parse(r.stdout) as { errors: Array<{ line: number; column: number; code: string }> };
    const order = doc.errors.map((e) => [e.line, e.column]);
    const sorted = [...order].sort((a, b) => (a[0] as number) - (b[0] as number) || (a[1] as number) - (b[1] as number));
    assert.deepEqual(order, sorted, JSON.stringify(doc.errors));
    assert.ok(doc.errors.length >= 4, JSON.stringify(doc.errors));
  });

  test('one line indented too deep gives one error, on that line, that says to check the indentation', async (t) => {
    const text = yaml`
      version: 1
      config:
        groups:
          - name: analysts
        api-keys:
          - name: "CI bot"
            group: analysts
             key: kg_ci_bot_key_0123456789abcdef
          - name: "Other"
            group: analysts
            key: kg_other_key_0123456789abcdef
          - name: "Third"
            group: analysts
            key: kg_third_key_0123456789abcdef
    `;
    const r = await validate(t, text);
    assert.equal(r.code, 1, r.all);
    const p = posOf(text, ' key: kg_ci_bot', 'key:');
    assert.deepEqual(r.diags, [`error: config.yml:${p.line}:${p.column}: YAML syntax: this line is indented deeper than the one above it: check the indentation`]);
    assert.match(r.stdout, /: invalid \(1 error\)\n$/);
  });

  test('an entry missing its "- " gives one error, not one per line of the entry', async (t) => {
    const text = yaml`
      version: 1
      config:
        api-keys:
          - name: "CI bot"
            group: all-users
            key: kg_ci_bot_key_0123456789abcdef
          name: "Other"
            group: all-users
            key: kg_other_key_0123456789abcdef
            description: the second entry
            creator: cam@example.com
    `;
    const r = await validate(t, text);
    assert.equal(r.code, 1, r.all);
    assert.equal(r.diags.length, 1, r.all);
    assert.match(r.diags[0] ?? '', /check the indentation$/);
  });

  test('a tab used as indentation gives one error that says to indent with spaces', async (t) => {
    const text = 'version: 1\nconfig:\n  api-keys:\n    - name: "CI bot"\n\t  group: all-users\n      key: kg_ci_bot_key_0123456789abcdef\n';
    const r = await validate(t, text);
    assert.equal(r.code, 1, r.all);
    assert.deepEqual(r.diags, ['error: config.yml:5:1: YAML syntax: a tab is used as indentation: indent with spaces']);
  });

  test('an unquoted {{env NAME}} template says to quote it, with the fix written out, and never shows the value', async (t) => {
    const text = yaml`
      version: 1
      config:
        api-keys:
          - name: "CI bot"
            group: all-users
            key: {{env CI_BOT_KEY}}
    `;
    const r = await validate(t, text, { CI_BOT_KEY: SECRET });
    assert.equal(r.code, 1, r.all);
    const p = posOf(text, 'key: {{', '{{');
    assert.deepEqual(r.diags, [
      `error: config.yml:${p.line}:${p.column}: api-keys[0].key: unquoted {{env NAME}} template: YAML reads "{{" as the start of a map; quote it: key: "{{env CI_BOT_KEY}}"`,
    ]);
    assert.ok(!r.all.includes(SECRET));
    // Quoted as the message says, the same file is valid.
    const fixed = await validate(t, text.replace('key: {{env CI_BOT_KEY}}', 'key: "{{env CI_BOT_KEY}}"'), { CI_BOT_KEY: SECRET });
    assert.equal(fixed.code, 0, fixed.all);
  });

  test('an unquoted template that YAML cannot even read points at the template, not at the next line', async (t) => {
    const text = yaml`
      version: 1
      config:
        api-keys:
          - name: "CI bot"
            group: all-users
            key: {{env CI_BOT_KEY}
          - name: "Other"
            group: all-users
            key: kg_other_key_0123456789abcdef
    `;
    const r = await validate(t, text);
    assert.equal(r.code, 1, r.all);
    const p = posOf(text, 'key: {{', '{{');
    assert.equal(r.diags.length, 1, r.all);
    assert.match(r.diags[0] ?? '', new RegExp(`^error: config\\.yml:${p.line}:${p.column}: unquoted \\{\\{env NAME\\}\\} template: .*quote it`));
  });

  test('a key: indented too little under api-keys says to check the indentation, not that "key" is Metabase\'s', async (t) => {
    const text = yaml`
      version: 1
      config:
        api-keys:
          - name: "CI bot"
            group: all-users
        key: kg_ci_bot_key_0123456789abcdef
    `;
    const r = await validate(t, text);
    assert.equal(r.code, 1, r.all);
    const p = posOf(text, 'key: kg_', 'key');
    assert.deepEqual(r.diags, [
      `error: config.yml:${p.line}:${p.column}: key: "key" is a field of an api-keys entry, not a section of config: check the indentation`,
    ]);
    assert.doesNotMatch(r.stdout, /Metabase's/);
    assert.match(r.stdout, /: invalid \(1 error\)\n$/);
  });

  test('a keygate setting indented too little says it belongs under keygate:', async (t) => {
    const text = yaml`
      version: 1
      config:
        keygate:
          upstream: http://127.0.0.1:3000
        listen: 127.0.0.1:8080
    `;
    const r = await validate(t, text);
    assert.equal(r.code, 1, r.all);
    assert.deepEqual(r.diags, ['error: config.yml:5:3: listen: "listen" is a keygate setting, under keygate:, not a section of config: check the indentation']);
  });

  test('a value with ": " in it says to quote it; an unclosed quote points at where it opens', async (t) => {
    const colon = yaml`
      version: 1
      config:
        api-keys:
          - name: CI bot: nightly
            group: all-users
            key: kg_ci_bot_key_0123456789abcdef
    `;
    const quote = yaml`
      version: 1
      config:
        api-keys:
          - name: "CI bot"
            group: all-users
            key: '${SECRET}"
          - name: "Other"
            group: all-users
            key: kg_other_key_0123456789abcdef
    `;
    const [a, b] = await Promise.all([validate(t, colon), validate(t, quote)]);
    assert.equal(a.code, 1, a.all);
    const p = posOf(colon, 'name: CI bot', 'CI bot');
    assert.deepEqual(a.diags, [`error: config.yml:${p.line}:${p.column}: YAML syntax: this value contains ": ", which YAML reads as a nested key: quote the value`]);
    assert.equal(b.code, 1, b.all);
    const q = posOf(quote, "key: '", "'");
    assert.deepEqual(b.diags, [`error: config.yml:${q.line}:${q.column}: YAML syntax: this value opens a ' quote that is never closed: close it on this line`]);
    assert.ok(!b.all.includes(SECRET), 'the value is not shown');
  });

  test('counts are in good English: 1 error, 1 warning, 1 key; plan, apply and serve too', async (t) => {
    const one = yaml`
      version: 1
      config:
        api-keys:
          - name: "CI bot"
            group: nobody
            key: kg_ci_bot_key_0123456789abcdef
    `;
    const weak = yaml`
      version: 1
      config:
        api-keys:
          - name: "CI bot"
            group: all-users
            key: weak-key-12345
    `;
    const bad = tempConfig(t, one);
    const [v, w, plan, apply, serve] = await Promise.all([
      validate(t, one),
      validate(t, weak),
      runCli(['plan', '-c', bad.config]),
      runCli(['apply', '-c', bad.config]),
      serveExpectingFailure(bad.config),
    ]);
    assert.match(v.stdout, /: invalid \(1 error\)\n$/, v.all);
    assert.match(w.stdout, /: valid \(1 key, 2 groups, 1 warning\)\n$/, w.all);
    assert.match(plan.stderr, /^plan: 1 error in .*config\.yml; nothing was changed$/m, shown(plan));
    assert.match(apply.stderr, /^apply: 1 error in .*config\.yml; nothing was changed$/m, shown(apply));
    assert.equal(serve.code, 1);
    assert.match(serve.stderr, /serve: .*config\.yml is invalid \(1 error\): not serving/, serve.stderr);
    for (const text of [v.all, w.all, shown(plan), shown(apply), serve.stderr]) assert.doesNotMatch(text, /\b1 (errors|warnings|keys)\b|\(s\)/);
  });
});
