/**
 * `keygate plan` and `keygate apply` as a user runs them: real child
 * processes, real config files and SQLite databases in temp folders. State
 * that a test only needs as a starting point is set up through the library,
 * which is faster than a child process.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { posOf, sha256, yaml } from './helpers/config.ts';
import { parseJson, runCli, shown } from './helpers/cli.ts';
import { applyText, insertApiKey, keyNames, keyRow, tables } from './helpers/db.ts';
import {
  ADMIN_KEY,
  baseConfig,
  BOT_KEY,
  clashConfig,
  manyKeys,
  NEW_KEY,
  range,
  withoutAnalysts,
  withoutBot,
} from './helpers/fixtures.ts';
import { tempConfig } from './helpers/tmp.ts';

/** Runs `keygate <command> -c config.yml` in the config's folder (the database is keygate.db beside it). */
function kg(dir: string, command: string, ...args: string[]): ReturnType<typeof runCli> {
  return runCli([command, '-c', 'config.yml', ...args], { cwd: dir });
}

function lines(text: string): string[] {
  return text.split('\n').filter((l) => l !== '');
}

describe('plan and apply', () => {
  test('plan exits 2 with the changes, apply exits 0, then plan exits 0 with no changes', async (t) => {
    const c = tempConfig(t, baseConfig());

    const plan1 = await kg(c.dir, 'plan');
    assert.equal(plan1.code, 2, shown(plan1));
    assert.deepEqual(lines(plan1.stdout), [
      '+ create group "analysts"',
      '+ create key "Admin API key" (group admin, key admin-k…)',
      '+ create key "CI bot" (group analysts, key ci-bot-…)',
      '= 2 unchanged',
      'Plan: 3 to create, 0 to update, 0 to delete.',
    ]);
    assert.ok(!existsSync(c.db), 'plan does not create the database');

    const apply = await kg(c.dir, 'apply');
    assert.equal(apply.code, 0, shown(apply));
    assert.match(apply.stdout, /^\+ create key "CI bot"/m);
    assert.ok(apply.stdout.endsWith(`Applied revision 1 to ${c.db}.\n`), apply.stdout);
    assert.deepEqual(keyNames(c.db), ['Admin API key', 'CI bot']);

    const plan2 = await kg(c.dir, 'plan');
    assert.equal(plan2.code, 0, shown(plan2));
    assert.deepEqual(lines(plan2.stdout), ['= 5 unchanged', 'No changes: the database matches the config.']);

    const again = await kg(c.dir, 'apply');
    assert.equal(again.code, 0, shown(again));
    assert.match(again.stdout, /Nothing to apply/);
    assert.equal(tables(c.db).revisions.length, 1, 'applying the same file again records no revision');
  });

  test('shows an edited key group as ~ update, and apply makes it so', async (t) => {
    const c = tempConfig(t, baseConfig());
    await applyText(c.db, baseConfig());
    c.rewrite(baseConfig({ botGroup: 'admin' }));

    const plan = await kg(c.dir, 'plan');
    assert.equal(plan.code, 2, shown(plan));
    assert.ok(lines(plan.stdout).includes('~ update key "CI bot": group "analysts" → "admin"'), plan.stdout);
    assert.match(plan.stdout, /Plan: 0 to create, 1 to update, 0 to delete\./);

    const apply = await kg(c.dir, 'apply');
    assert.equal(apply.code, 0, shown(apply));
    assert.equal(keyRow(c.db, 'CI bot').group_name, 'admin');
  });

  test('shows a removed key as - delete, and apply deletes it', async (t) => {
    const c = tempConfig(t, baseConfig());
    await applyText(c.db, baseConfig());
    c.rewrite(withoutBot());

    const plan = await kg(c.dir, 'plan');
    assert.equal(plan.code, 2, shown(plan));
    assert.ok(lines(plan.stdout).includes('- delete key "CI bot" (group analysts, key ci-bot-…)'), plan.stdout);

    const apply = await kg(c.dir, 'apply');
    assert.equal(apply.code, 0, shown(apply));
    assert.deepEqual(keyNames(c.db), ['Admin API key']);
  });

  test('plan says adopt for an api-owned key that the file now declares', async (t) => {
    const c = tempConfig(t, baseConfig());
    await applyText(c.db, withoutBot());
    insertApiKey(c.db, { name: 'CI bot', key: BOT_KEY, group: 'analysts' });

    const plan = await kg(c.dir, 'plan');
    assert.equal(plan.code, 2, shown(plan));
    assert.ok(
      lines(plan.stdout).includes('~ adopt key "CI bot": source api → config (adopted: now managed by the config file)'),
      plan.stdout,
    );
  });

  test('plan lists the api-owned keys that move to all-users when their group goes', async (t) => {
    const c = tempConfig(t, withoutAnalysts());
    await applyText(c.db, baseConfig());
    insertApiKey(c.db, { name: 'Made in the UI', key: NEW_KEY, group: 'analysts' });

    const plan = await kg(c.dir, 'plan');
    assert.equal(plan.code, 2, shown(plan));
    const out = lines(plan.stdout);
    assert.ok(
      out.includes(
        '~ update key "Made in the UI": group "analysts" → "all-users"; allow none → [{"methods":["GET"],"paths":["/api/card/**"]}] ' +
          '(group "analysts" is deleted: the api-owned key moves to all-users and keeps the rules of "analysts" as its own, so it gains no route)',
      ),
      plan.stdout,
    );
    assert.ok(out.includes('- delete group "analysts"'), plan.stdout);
  });

  test('leaves an api-owned key in place through apply', async (t) => {
    const c = tempConfig(t, baseConfig({ botGroup: 'admin' }));
    await applyText(c.db, baseConfig());
    insertApiKey(c.db, { name: 'Made in the UI', key: NEW_KEY, group: 'analysts' });
    const before = keyRow(c.db, 'Made in the UI');

    const apply = await kg(c.dir, 'apply');
    assert.equal(apply.code, 0, shown(apply));
    assert.ok(!apply.stdout.includes('Made in the UI'), apply.stdout);
    assert.deepEqual(keyRow(c.db, 'Made in the UI'), before);
  });
});

describe('failed applies change nothing', () => {
  test('the deletion guard refuses with exit 1 and a clear message; --allow-deletes passes', async (t) => {
    const names = range(12);
    const c = tempConfig(t, manyKeys(names.slice(0, 1)));
    await applyText(c.db, manyKeys(names));
    const bytes = readFileSync(c.db);
    const rows = tables(c.db);

    const plan = await kg(c.dir, 'plan');
    assert.equal(plan.code, 1, shown(plan));
    assert.match(plan.stdout, /- delete key "key-011"/, 'the refused plan is still shown to the reviewer');
    assert.match(plan.stderr, /deletion guard: this change deletes 11 config-owned keys \(limit 10\)/);
    const planAllowed = await kg(c.dir, 'plan', '--allow-deletes');
    assert.equal(planAllowed.code, 2, shown(planAllowed));

    const refused = await kg(c.dir, 'apply');
    assert.equal(refused.code, 1, shown(refused));
    assert.match(refused.stderr, /deletion guard: the change would delete 11 of 12 config-owned keys \(limit 10\)/);
    assert.match(refused.stderr, /keygate apply --allow-deletes/);
    assert.ok(readFileSync(c.db).equals(bytes), 'the database file is byte-for-byte as before');
    assert.deepEqual(tables(c.db), rows);

    const allowed = await kg(c.dir, 'apply', '--allow-deletes');
    assert.equal(allowed.code, 0, shown(allowed));
    assert.deepEqual(keyNames(c.db), ['key-000']);
  });

  test('a constraint failing mid-way leaves the database byte-for-byte as it was', async (t) => {
    // Creates a group and updates a key, then creates a key whose digest an
    // api-owned key already holds.
    const clash = clashConfig();
    const c = tempConfig(t, clash);
    await applyText(c.db, baseConfig());
    insertApiKey(c.db, { name: 'Legacy', key: NEW_KEY });
    const bytes = readFileSync(c.db);
    const rows = tables(c.db);

    const apply = await kg(c.dir, 'apply');
    assert.equal(apply.code, 1, shown(apply));
    assert.match(apply.stderr, /apply failed, nothing was changed: a key declared in the file is already used by another key/);
    assert.ok(!apply.stderr.includes(NEW_KEY) && !apply.stdout.includes(NEW_KEY), 'the clashing key is not shown');
    assert.ok(readFileSync(c.db).equals(bytes), 'the database file is byte-for-byte as before');
    assert.deepEqual(tables(c.db), rows);
  });

  test('an invalid file makes plan and apply exit 1 with every error, and writes nothing', async (t) => {
    const text = yaml`
      version: 1
      config:
        api-keys:
          - name: CI bot
            group: analyst
            key: ${BOT_KEY}
          - name: Short
            group: admin
            key: tooshort
    `;
    const c = tempConfig(t, text);
    const [plan, apply] = await Promise.all([kg(c.dir, 'plan'), kg(c.dir, 'apply')]);
    for (const [command, r] of [['plan', plan], ['apply', apply]] as const) {
      assert.equal(r.code, 1, shown(r));
      const group = posOf(text, 'group: analyst', 'analyst');
      const key = posOf(text, 'key: tooshort', 'tooshort');
      assert.ok(
        r.stderr.includes(
          `error: config.yml:${group.line}:${group.column}: api-keys[0].group: unknown group "analyst" (declared: admin, all-users)\n`,
        ),
        r.stderr,
      );
      assert.ok(r.stderr.includes(`error: config.yml:${key.line}:${key.column}: api-keys[1].key: must be 12-254 characters`), r.stderr);
      assert.match(r.stderr, new RegExp(`${command}: 2 errors in .*config\\.yml; nothing was changed`));
    }
    assert.ok(!existsSync(c.db), 'no database was created');
  });
});

describe('--json', () => {
  test('plan --json is one parseable document with the changes and a summary, keys masked', async (t) => {
    const c = tempConfig(t, baseConfig({ botGroup: 'admin' }));
    await applyText(c.db, withoutBot());

    const r = await kg(c.dir, 'plan', '--json');
    assert.equal(r.code, 2, shown(r));
    const doc = parseJson(r) as {
      config_sha256: string;
      changes: Array<{ action: string; kind: string; name: string; after?: Record<string, unknown> }>;
      summary: Record<string, number>;
    };
    assert.equal(doc.config_sha256, sha256(baseConfig({ botGroup: 'admin' })));
    assert.deepEqual(
      doc.changes.map((ch) => [ch.action, ch.kind, ch.name]),
      [['create', 'key', 'CI bot']],
    );
    assert.deepEqual(doc.summary, { create: 1, update: 0, delete: 0, unchanged: 4 });
    const after = doc.changes[0]?.after;
    assert.equal(after?.group, 'admin');
    assert.match(String(after?.masked_key), /^ci-bot-\*+$/);
    assert.ok(!r.stdout.includes(BOT_KEY), 'no key in the plan');
  });

  test('plan --json of an unchanged database has no changes and exits 0', async (t) => {
    const c = tempConfig(t, baseConfig());
    await applyText(c.db, baseConfig());
    const r = await kg(c.dir, 'plan', '--json');
    assert.equal(r.code, 0, shown(r));
    const doc = parseJson(r) as { changes: unknown[]; summary: Record<string, number> };
    assert.deepEqual(doc.changes, []);
    assert.deepEqual(doc.summary, { create: 0, update: 0, delete: 0, unchanged: 5 });
  });

  test('apply --json reports the applied revision, and a refusal as an error document', async (t) => {
    const names = range(12);
    const c = tempConfig(t, manyKeys(names));

    const ok = await kg(c.dir, 'apply', '--json');
    assert.equal(ok.code, 0, shown(ok));
    const applied = parseJson(ok) as { applied: boolean; revision: number; summary: Record<string, number> };
    assert.equal(applied.applied, true);
    assert.equal(applied.revision, 1);
    assert.equal(applied.summary.create, 12);

    c.rewrite(manyKeys([]));
    const refused = await kg(c.dir, 'apply', '--json');
    assert.equal(refused.code, 1, shown(refused));
    const err = parseJson(refused) as { error: string; message: string };
    assert.equal(err.error, 'KG_ERR_DELETION_GUARD');
    assert.match(err.message, /deletion guard/);
  });
});
