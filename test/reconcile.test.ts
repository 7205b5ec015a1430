/**
 * Reconcile (design §2): config file → plan → one SQLite transaction, against
 * real database files in temp folders. The CLI's view of the same behaviour is
 * in cli-plan-apply.test.ts; here the library is called directly to keep the suite fast.
 */
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { describe, test } from 'node:test';
import { KeygateError } from '../src/errors.ts';
import type { Change } from '../src/reconcile/diff.ts';
import { openSqliteStore } from '../src/store/sqlite.ts';
import Database from 'better-sqlite3';
import { sha256, valid, yaml } from './helpers/config.ts';
import {
  applyText,
  insertApiKey,
  keyNames,
  keyRow,
  planText,
  reconcileInto,
  tables,
} from './helpers/db.ts';
import { ADMIN_KEY, analystsWith, baseConfig, BOT_KEY, clashConfig, manyKeys, NEW_KEY, range, withoutAnalysts, withoutBot } from './helpers/fixtures.ts';
import { tempDir } from './helpers/tmp.ts';

const base = baseConfig;

function changeFor(changes: readonly Change[], kind: Change['kind'], name: string): Change {
  const found = changes.filter((c) => c.kind === kind && c.name === name);
  assert.equal(found.length, 1, `one change for ${kind} "${name}" in ${JSON.stringify(changes, null, 1)}`);
  return found[0] as Change;
}

describe('first apply', () => {
  test('creates the declared groups and keys, storing only digests and display prefixes', async (t) => {
    const db = tempDir(t).path('keygate.db');
    const { plan, revision } = await applyText(db, base());
    assert.deepEqual(
      plan.changes.map((c) => `${c.action} ${c.kind} ${c.name}`),
      ['create group analysts', 'create key Admin API key', 'create key CI bot'],
    );
    assert.equal(revision?.number, 1);

    const { groups, api_keys } = tables(db);
    assert.deepEqual(
      groups.map((g) => [g.name, g.source]),
      [
        ['all-users', 'config'],
        ['admin', 'config'],
        ['analysts', 'config'],
      ],
    );
    const analysts = groups.find((g) => g.name === 'analysts');
    assert.deepEqual(JSON.parse(String(analysts?.allow)), [{ methods: ['GET'], paths: ['/api/card/**'] }]);
    assert.equal(analysts?.description, 'Read-only');

    assert.equal(api_keys.length, 2);
    const bot = keyRow(db, 'CI bot');
    assert.equal(bot.digest, sha256(BOT_KEY));
    assert.equal(bot.prefix, BOT_KEY.slice(0, 7));
    assert.equal(bot.group_name, 'analysts');
    assert.equal(bot.source, 'config');
    for (const row of api_keys) {
      assert.ok(!Object.values(row).includes(BOT_KEY) && !Object.values(row).includes(ADMIN_KEY), 'no plaintext key in a row');
    }
  });

  test('stores a key given only as key_hash with its digest and no prefix', async (t) => {
    const db = tempDir(t).path('keygate.db');
    await applyText(
      db,
      yaml`
        version: 1
        config:
          api-keys:
            - name: Reporting
              group: all-users
              key_hash: "sha256:${sha256('reporting-key-0123456789')}"
      `,
    );
    const row = keyRow(db, 'Reporting');
    assert.equal(row.digest, sha256('reporting-key-0123456789'));
    assert.equal(row.prefix, null);
  });

  test('creates the database file with mode 0600, and its -wal and -shm files likewise', async (t) => {
    const db = tempDir(t).path('keygate.db');
    const previous = process.umask(0o022);
    try {
      await openSqliteStore(db).close();
      const conn = new Database(db);
      try {
        conn.prepare("INSERT INTO revisions (config_sha256, config_file, applied_at, created, updated, deleted) VALUES ('x', 'y', 'z', 0, 0, 0)").run();
        assert.equal(statSync(db).mode & 0o777, 0o600);
        for (const side of [`${db}-wal`, `${db}-shm`]) {
          assert.equal(statSync(side).mode & 0o077, 0, `${side} is not readable by others`);
        }
      } finally {
        conn.close();
      }
    } finally {
      process.umask(previous);
    }
  });
});

describe('applying again', () => {
  test('applying the same file twice changes nothing and records no new revision', async (t) => {
    const db = tempDir(t).path('keygate.db');
    await applyText(db, base());
    const before = tables(db);
    const again = await applyText(db, base());
    assert.deepEqual(again.plan.changes, []);
    assert.equal(again.plan.summary.unchanged, 5, 'all-users, admin, analysts and two keys');
    assert.equal(again.revision, null);
    assert.deepEqual(tables(db), before);
  });

  test('a plan writes nothing, even when it has changes', async (t) => {
    const db = tempDir(t).path('keygate.db');
    await applyText(db, base());
    const before = tables(db);
    const { plan, revision } = await planText(db, base({ botGroup: 'admin' }));
    assert.equal(plan.changes.length, 1);
    assert.equal(revision, null);
    assert.deepEqual(tables(db), before);
  });

  test('plan shows exactly the changes that apply then makes', async (t) => {
    const db = tempDir(t).path('keygate.db');
    const { desired } = valid(base());
    const planned = await reconcileInto(db, desired, { apply: false });
    const applied = await reconcileInto(db, desired, { apply: true });
    assert.deepEqual(planned.plan, applied.plan, 'plan and apply run the same engine');
  });

  test('updates a key whose group changed, keeping its id', async (t) => {
    const db = tempDir(t).path('keygate.db');
    await applyText(db, base());
    const id = keyRow(db, 'CI bot').id;
    const { plan } = await applyText(db, base({ botGroup: 'admin' }));
    const c = changeFor(plan.changes, 'key', 'CI bot');
    assert.equal(c.action, 'update');
    assert.deepEqual(c.fields, ['group']);
    assert.equal(c.before !== undefined && 'group' in c.before ? c.before.group : undefined, 'analysts');
    assert.equal(c.after !== undefined && 'group' in c.after ? c.after.group : undefined, 'admin');
    const row = keyRow(db, 'CI bot');
    assert.equal(row.group_name, 'admin');
    assert.equal(row.id, id);
  });

  test('updates description, creator, expiry, disabled flag and allow rules of a key', async (t) => {
    const db = tempDir(t).path('keygate.db');
    await applyText(db, base());
    const edited = base().replace(
      `key: ${BOT_KEY}\n`,
      `key: ${BOT_KEY}\n      description: Builds\n      creator: cam@example.com\n      expires_at: 2099-01-01T00:00:00Z\n      disabled: true\n      allow: [{paths: ["/api/card/1"]}]\n`,
    );
    const { plan } = await applyText(db, edited);
    const c = changeFor(plan.changes, 'key', 'CI bot');
    assert.deepEqual([...(c.fields ?? [])].sort(), ['allow', 'creator', 'description', 'disabled', 'expires_at']);
    const row = keyRow(db, 'CI bot');
    assert.equal(row.description, 'Builds');
    assert.equal(row.creator, 'cam@example.com');
    assert.equal(row.expires_at, '2099-01-01T00:00:00.000Z');
    assert.equal(row.disabled, 1);
    assert.deepEqual(JSON.parse(String(row.allow)), [{ paths: ['/api/card/1'] }]);
  });

  test('replaces the stored digest and prefix when a key\'s material changes', async (t) => {
    const db = tempDir(t).path('keygate.db');
    await applyText(db, base());
    const { plan } = await applyText(db, base().replace(`key: ${BOT_KEY}`, `key: ${NEW_KEY}`));
    assert.deepEqual(changeFor(plan.changes, 'key', 'CI bot').fields, ['key']);
    const row = keyRow(db, 'CI bot');
    assert.equal(row.digest, sha256(NEW_KEY));
    assert.equal(row.prefix, NEW_KEY.slice(0, 7));
  });

  test('deletes a config key that the file no longer declares', async (t) => {
    const db = tempDir(t).path('keygate.db');
    await applyText(db, base());
    const { plan, revision } = await applyText(db, withoutBot());
    const c = changeFor(plan.changes, 'key', 'CI bot');
    assert.equal(c.action, 'delete');
    assert.deepEqual(keyNames(db), ['Admin API key']);
    assert.deepEqual([revision?.created, revision?.updated, revision?.deleted], [0, 0, 1]);
  });

  test('deletes a config group that the file no longer declares', async (t) => {
    const db = tempDir(t).path('keygate.db');
    await applyText(db, base());
    const { plan } = await applyText(db, withoutAnalysts());
    assert.equal(changeFor(plan.changes, 'group', 'analysts').action, 'delete');
    assert.deepEqual(
      tables(db).groups.map((g) => g.name).sort(),
      ['admin', 'all-users'],
    );
    assert.equal(keyRow(db, 'CI bot').group_name, 'all-users');
  });

  test('records each applied change set as a revision with its counts and the file\'s SHA-256', async (t) => {
    const db = tempDir(t).path('keygate.db');
    await applyText(db, base());
    const next = analystsWith([
      { name: 'CI bot', group: 'admin', key: BOT_KEY },
      { name: 'Newcomer', group: 'analysts', key: NEW_KEY },
    ]);
    await applyText(db, next);
    const { revisions } = tables(db);
    assert.deepEqual(
      revisions.map((r) => [r.number, r.config_sha256, r.created, r.updated, r.deleted]),
      [
        [1, sha256(base()), 3, 0, 0],
        [2, sha256(next), 1, 1, 1],
      ],
    );
    for (const r of revisions) assert.ok(!Number.isNaN(Date.parse(String(r.applied_at))), 'applied_at is a time');
  });
});

describe('api-owned rows', () => {
  test('leaves api-owned keys alone', async (t) => {
    const db = tempDir(t).path('keygate.db');
    await applyText(db, base());
    insertApiKey(db, { name: 'Made in the UI', key: 'ui-made-key-0123456789abc', group: 'analysts' });
    const apiRow = keyRow(db, 'Made in the UI');

    const { plan } = await applyText(db, base({ botGroup: 'admin' }));
    assert.ok(!plan.changes.some((c) => c.name === 'Made in the UI'), 'the plan does not touch the api key');
    assert.deepEqual(keyRow(db, 'Made in the UI'), apiRow);

    const again = await applyText(db, base());
    assert.ok(!again.plan.changes.some((c) => c.name === 'Made in the UI'));
    assert.deepEqual(keyRow(db, 'Made in the UI'), apiRow);
  });

  test('adopts an api-owned key that a config entry names, and the plan says so', async (t) => {
    const db = tempDir(t).path('keygate.db');
    await applyText(db, manyKeys([]));
    const apiId = insertApiKey(db, { name: 'CI bot', key: 'ui-made-key-0123456789abc', group: 'all-users' });

    const { plan } = await applyText(db, base());
    const c = changeFor(plan.changes, 'key', 'CI bot');
    assert.equal(c.action, 'update');
    assert.equal(c.adopt, true);
    assert.ok(c.fields?.includes('source'));
    assert.ok(c.fields?.includes('key'));
    assert.ok(c.fields?.includes('group'));

    const row = keyRow(db, 'CI bot');
    assert.equal(row.source, 'config');
    assert.equal(row.id, apiId, 'the adopted row keeps its id');
    assert.equal(row.digest, sha256(BOT_KEY));
    assert.equal(row.group_name, 'analysts');
    assert.deepEqual((await applyText(db, base())).plan.changes, [], 'once adopted, the file matches');
  });

  test('a group renamed in the file only in case keeps its row and its keys (names are unique ignoring case)', async (t) => {
    const db = tempDir(t).path('keygate.db');
    await applyText(db, base());
    insertApiKey(db, { name: 'Made in the UI', key: 'ui-made-key-0123456789abc', group: 'analysts' });
    const before = tables(db).groups.find((g) => g.name === 'analysts');
    const renamed = base().replace('- name: analysts', '- name: Analysts').replace('group: analysts', 'group: Analysts');

    const { plan } = await applyText(db, renamed);
    const c = changeFor(plan.changes, 'group', 'Analysts');
    assert.equal(c.action, 'update');
    assert.deepEqual(c.fields, ['name']);
    assert.ok(!plan.changes.some((x) => x.action === 'delete' || x.kind === 'key'), JSON.stringify(plan.changes));
    const after = tables(db).groups.find((g) => g.name === 'Analysts');
    assert.equal(after?.id, before?.id, 'the group kept its row');
    assert.equal(keyRow(db, 'Made in the UI').group_name, 'Analysts', 'the api key stayed in the group');
    assert.equal(keyRow(db, 'CI bot').group_name, 'Analysts');
    assert.deepEqual((await applyText(db, renamed)).plan.changes, []);
  });

  test('adopts an api-owned group whose name matches a declared one ignoring case, in the file\'s spelling', async (t) => {
    const db = tempDir(t).path('keygate.db');
    await applyText(db, withoutAnalysts());
    const sqlite = new Database(db);
    sqlite.prepare("INSERT INTO groups (id, name, description, allow, source, builtin, created_at, updated_at) VALUES (777, 'ANALYSTS', NULL, NULL, 'api', 0, 'x', 'x')").run();
    sqlite.close();
    insertApiKey(db, { name: 'Made in the UI', key: 'ui-made-key-0123456789abc', group: 'ANALYSTS' });

    const { plan } = await applyText(db, base());
    const c = changeFor(plan.changes, 'group', 'analysts');
    assert.equal(c.adopt, true);
    assert.ok(c.fields?.includes('name') && c.fields.includes('source'));
    const groups = tables(db).groups.filter((g) => String(g.name).toLowerCase() === 'analysts');
    assert.deepEqual(groups.map((g) => [g.id, g.name, g.source]), [[777, 'analysts', 'config']]);
    assert.equal(keyRow(db, 'Made in the UI').group_name, 'analysts');
  });

  test('moves the api-owned keys of a group that the file no longer declares to all-users', async (t) => {
    const db = tempDir(t).path('keygate.db');
    await applyText(db, base());
    insertApiKey(db, { name: 'Made in the UI', key: 'ui-made-key-0123456789abc', group: 'analysts' });
    const apiRow = keyRow(db, 'Made in the UI');

    const { plan } = await applyText(db, withoutAnalysts());
    const moved = changeFor(plan.changes, 'key', 'Made in the UI');
    assert.equal(moved.action, 'update');
    assert.deepEqual(moved.fields, ['group', 'allow'], 'it takes the rules of the group it loses, so it gains no route');
    assert.match(moved.reason ?? '', /group "analysts" is deleted/);
    assert.equal(changeFor(plan.changes, 'group', 'analysts').action, 'delete');

    const row = keyRow(db, 'Made in the UI');
    assert.equal(row.group_name, 'all-users');
    assert.equal(row.source, 'api');
    assert.equal(row.digest, apiRow.digest, 'the key keeps working');
    assert.deepEqual(JSON.parse(String(row.allow)), [{ methods: ['GET'], paths: ['/api/card/**'] }]);
    assert.ok(!tables(db).groups.some((g) => g.name === 'analysts'));
  });
});

describe('deletion guard', () => {
  test('refuses to delete more than 10 config keys, and allowDeletes lifts it once', async (t) => {
    const db = tempDir(t).path('keygate.db');
    const names = range(12);
    await applyText(db, manyKeys(names));
    const before = tables(db);

    await assert.rejects(() => applyText(db, manyKeys(names.slice(0, 1))),
      (err: unknown) => {
        assert.ok(err instanceof KeygateError);
        assert.equal(err.code, 'KG_ERR_DELETION_GUARD');
        assert.match(err.message, /would delete 11 of 12 config-owned keys \(limit 10\)/);
        assert.match(err.message, /--allow-deletes/);
        return true;
      },
    );
    assert.deepEqual(tables(db), before, 'a refused reconcile changes nothing');

    const { revision } = await applyText(db, manyKeys(names.slice(0, 1)), { allowDeletes: true });
    assert.equal(revision?.deleted, 11);
    assert.deepEqual(keyNames(db), ['key-000']);
  });

  test('allows deleting up to a quarter of many config keys, and refuses more', async (t) => {
    const dir = tempDir(t);
    const names = range(100);
    const allowed = dir.path('quarter.db');
    await applyText(allowed, manyKeys(names));
    assert.equal((await applyText(allowed, manyKeys(names.slice(25)))).revision?.deleted, 25);

    const refused = dir.path('more.db');
    await applyText(refused, manyKeys(names));
    await assert.rejects(() => applyText(refused, manyKeys(names.slice(26))), { code: 'KG_ERR_DELETION_GUARD' });
    assert.equal(keyNames(refused).length, 100);
  });

  test('takes its limit from keygate.max_deletes when the file sets it', async (t) => {
    const db = tempDir(t).path('keygate.db');
    const settings = '  keygate:\n    max_deletes: 1\n';
    await applyText(db, manyKeys(range(3), settings));
    await assert.rejects(() => applyText(db, manyKeys(range(1), settings)), { code: 'KG_ERR_DELETION_GUARD' });
    assert.equal(keyNames(db).length, 3);
    await applyText(db, manyKeys(range(2), settings));
    assert.equal(keyNames(db).length, 2);
  });

  test('does not count api-owned keys, which a reconcile never deletes', async (t) => {
    const db = tempDir(t).path('keygate.db');
    await applyText(db, manyKeys([]));
    for (const n of range(20, 'api')) insertApiKey(db, { name: n, key: `api-material-${n}-0123456789` });
    const { plan } = await applyText(db, manyKeys(['only-one']));
    assert.equal(plan.summary.delete, 0);
    assert.equal(keyNames(db).length, 21);
  });
});

describe('one transaction', () => {
  test('a constraint that fails mid-way leaves every row as it was', async (t) => {
    const db = tempDir(t).path('keygate.db');
    await applyText(db, base());
    insertApiKey(db, { name: 'Legacy', key: NEW_KEY });
    const before = tables(db);

    // Creates a group and updates a key (both fine), then creates a key whose
    // digest the api-owned "Legacy" row already holds.
    const clash = clashConfig();
    await assert.rejects(() => applyText(db, clash),
      (err: unknown) => {
        assert.ok(err instanceof KeygateError);
        assert.equal(err.code, 'KG_ERR_APPLY_FAILED');
        assert.match(err.message, /nothing was changed/);
        assert.ok(!err.message.includes(NEW_KEY), 'the message does not show the key');
        return true;
      },
    );
    assert.deepEqual(tables(db), before);
  });

  test('hands a key\'s material from one entry to another in the same apply', async (t) => {
    // Key rotation: the old key lives on under a new name while the entry
    // that had it gets a new key. The final state is consistent, so the apply
    // must not trip over the intermediate one.
    const db = tempDir(t).path('keygate.db');
    await applyText(db, base());
    const rotated = analystsWith([
      { name: 'CI bot (old key, until Friday)', group: 'analysts', key: BOT_KEY },
      { name: 'Admin API key', group: 'admin', key: ADMIN_KEY },
      { name: 'CI bot', group: 'analysts', key: NEW_KEY },
    ]);
    await applyText(db, rotated);
    assert.equal(keyRow(db, 'CI bot (old key, until Friday)').digest, sha256(BOT_KEY));
    assert.equal(keyRow(db, 'CI bot').digest, sha256(NEW_KEY));
  });
});

describe('ids', () => {
  test('config key and group ids are derived from names: two databases applying the same file agree', async (t) => {
    const dir = tempDir(t);
    const one = dir.path('one.db');
    const two = dir.path('two.db');
    await applyText(one, manyKeys(['warm-up'])); // a different history first
    await applyText(one, base());
    await applyText(two, base());
    const ids = (db: string): Record<string, unknown> => {
      const { groups, api_keys } = tables(db);
      return Object.fromEntries([...groups.map((g) => [`group ${String(g.name)}`, g.id]), ...api_keys.map((k) => [`key ${String(k.name)}`, k.id])]);
    };
    assert.deepEqual(ids(one), ids(two));
    assert.notEqual(ids(one)['key CI bot'], ids(one)['key Admin API key']);
  });

  test('a key that is deleted and declared again gets its old id back', async (t) => {
    const db = tempDir(t).path('keygate.db');
    await applyText(db, base());
    const id = keyRow(db, 'CI bot').id;
    await applyText(db, withoutBot());
    assert.deepEqual(keyNames(db), ['Admin API key']);
    await applyText(db, base());
    assert.equal(keyRow(db, 'CI bot').id, id);
  });
});

describe('built-in groups', () => {
  test('an all-users entry updates the built-in group, and removing the entry restores its defaults', async (t) => {
    const db = tempDir(t).path('keygate.db');
    const withAllUsers = yaml`
      version: 1
      config:
        groups:
          - name: all-users
            description: Everyone with a key
            allow: [{methods: [GET], paths: ["/api/health"]}]
        api-keys: []
    `;
    const { plan } = await applyText(db, withAllUsers);
    assert.equal(changeFor(plan.changes, 'group', 'all-users').action, 'update');
    const allUsers = (): Record<string, unknown> | undefined => tables(db).groups.find((g) => g.name === 'all-users');
    assert.equal(allUsers()?.id, 1);
    assert.equal(allUsers()?.description, 'Everyone with a key');

    await applyText(db, manyKeys([]));
    assert.equal(allUsers()?.id, 1, 'all-users is never deleted');
    assert.equal(allUsers()?.description, 'All Users');
    assert.equal(allUsers()?.allow, null);
  });
});
