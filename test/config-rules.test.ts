/**
 * The rules of the config file (design §1), one passing and one failing file
 * each, through the real loader: parse, template, schema, semantic checks.
 * Every failing file's diagnostic is checked for its path, line and column.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  assertPointsAt,
  at,
  FILE,
  formatDiagnostic,
  hashOf,
  invalid,
  posOf,
  sha256,
  valid,
  yaml,
} from './helpers/config.ts';

const CI_BOT_KEY = 'ci-bot-key-from-env-0123456789';
const REPORTING_KEY = 'reporting-key-0123456789';

/** A file that uses every section keygate reads, and is valid. */
const FULL = yaml`
  # yaml-language-server: $schema=./schemas/config.schema.json
  version: 1
  config:
    keygate:
      upstream: http://127.0.0.1:3000
      listen: 127.0.0.1:8080
    users:
      - email: cam@example.com
        first_name: Cam
        password: 2cans3cans4cans
    groups:
      - name: analysts
        description: Read-only access to questions and dashboards
        allow:
          - methods: [GET, HEAD]
            paths: ["/api/card/**", "/api/dashboard/*"]
    api-keys:
      - name: Admin API key
        group: admin
        description: API key with admin permissions.
        creator: cam@example.com
        key: mb_AbC+/=0123456789xyzXYZ
      - name: CI bot
        group: analysts
        key: "{{env CI_BOT_KEY}}"
      - name: Reporting
        group: analysts
        key_hash: "${hashOf(REPORTING_KEY)}"
        expires_at: 2099-06-30T00:00:00Z
`;

describe('a complete config file', () => {
  test('loads with no errors and no warnings, with keys resolved to digests', () => {
    const { desired, warnings } = valid(FULL, { CI_BOT_KEY });
    assert.deepEqual(warnings, []);
    assert.deepEqual(
      desired.groups.map((g) => g.name),
      ['all-users', 'admin', 'analysts'],
    );
    assert.deepEqual(
      desired.keys.map((k) => [k.name, k.group]),
      [
        ['Admin API key', 'admin'],
        ['CI bot', 'analysts'],
        ['Reporting', 'analysts'],
      ],
    );
    const [admin, bot, reporting] = desired.keys;
    assert.equal(admin?.digest, sha256('mb_AbC+/=0123456789xyzXYZ'));
    assert.equal(admin?.prefix, 'mb_AbC+');
    assert.equal(admin?.creator, 'cam@example.com');
    assert.equal(bot?.digest, sha256(CI_BOT_KEY));
    assert.equal(reporting?.digest, sha256(REPORTING_KEY));
    assert.equal(reporting?.prefix, null, 'a key known only by its hash has no display prefix');
    assert.equal(reporting?.expiresAt, '2099-06-30T00:00:00.000Z');
    assert.equal(desired.settings.upstream, 'http://127.0.0.1:3000');
  });
});

describe('version', () => {
  test('accepts any number from 1 up to, not including, 2', () => {
    for (const v of ['1', '1.0', '1.5', '1.99']) {
      valid(yaml`
        version: ${v}
        config: {}
      `);
    }
  });

  test('rejects version 2, pointing at the value', () => {
    const { errors } = invalid(yaml`
      version: 2
      config: {}
    `);
    assert.equal(errors.length, 1);
    assert.equal(formatDiagnostic(errors[0]!), `${FILE}:1:10: version: must be a number from 1 up to (not including) 2`);
  });

  test('rejects a version below 1 and a version written as a string', () => {
    const low = invalid(yaml`
      version: 0.9
      config: {}
    `);
    assert.equal(formatDiagnostic(at(low.errors, 'version')), `${FILE}:1:10: version: must be a number from 1 up to (not including) 2`);
    const quoted = invalid(yaml`
      version: "1"
      config: {}
    `);
    assert.equal(formatDiagnostic(at(quoted.errors, 'version')), `${FILE}:1:10: version: must be a number`);
  });
});

describe('api-keys entries', () => {
  test('require a name, reported at the entry that lacks it', () => {
    const text = yaml`
      version: 1
      config:
        api-keys:
          - group: admin
            key: abcdefghijklmnopqrstuvwxyz
    `;
    const { errors } = invalid(text);
    const d = at(errors, 'api-keys[0].name');
    assert.equal(d.message, 'missing required field "name"');
    assertPointsAt(d, text, '- group: admin', 'group');
  });

  test('require a group, reported at the entry that lacks it', () => {
    const text = yaml`
      version: 1
      config:
        api-keys:
          - name: CI bot
            key: abcdefghijklmnopqrstuvwxyz
    `;
    const { errors } = invalid(text);
    const d = at(errors, 'api-keys[0].group');
    assert.equal(d.message, 'missing required field "group"');
    assertPointsAt(d, text, '- name: CI bot', 'name');
  });

  test('must not carry both key and key_hash', () => {
    const text = yaml`
      version: 1
      config:
        api-keys:
          - name: CI bot
            group: admin
            key: abcdefghijklmnopqrstuvwxyz
            key_hash: "${hashOf('abcdefghijklmnopqrstuvwxyz')}"
    `;
    const { errors } = invalid(text);
    const d = at(errors, 'api-keys[0]');
    assert.equal(d.message, 'exactly one of "key" or "key_hash" is required (found both)');
    assertPointsAt(d, text, '- name: CI bot', 'name');
  });

  test('must carry one of key or key_hash', () => {
    const text = yaml`
      version: 1
      config:
        api-keys:
          - name: Good
            group: admin
            key: abcdefghijklmnopqrstuvwxyz
          - name: No key
            group: admin
    `;
    const { errors } = invalid(text);
    const d = at(errors, 'api-keys[1]');
    assert.equal(d.message, 'exactly one of "key" or "key_hash" is required (found neither)');
    assertPointsAt(d, text, '- name: No key', 'name');
  });

  test('rejects a name used twice, naming the first entry', () => {
    const text = yaml`
      version: 1
      config:
        api-keys:
          - name: CI bot
            group: admin
            key: abcdefghijklmnopqrstuvwxyz
          - name: CI bot
            group: all-users
            key: zyxwvutsrqponmlkjihgfedcba
    `;
    const { errors } = invalid(text);
    assert.equal(errors.length, 1);
    const d = at(errors, 'api-keys[1].name');
    assert.equal(d.code, 'duplicate_name');
    assert.equal(d.message, 'duplicate key name "CI bot" (first declared at api-keys[0])');
    assertPointsAt(d, text, '- name: CI bot', 'CI bot', 2);
  });

  test('rejects a name longer than 254 characters', () => {
    const text = yaml`
      version: 1
      config:
        api-keys:
          - name: ${'n'.repeat(255)}
            group: admin
            key: abcdefghijklmnopqrstuvwxyz
    `;
    const d = at(invalid(text).errors, 'api-keys[0].name');
    assert.equal(d.message, 'must be at most 254 characters');
    assertPointsAt(d, text, '- name: nnn', 'nnn');
  });
});

describe('key material', () => {
  const withKey = (key: string): string => yaml`
    version: 1
    config:
      api-keys:
        - name: CI bot
          group: admin
          key: ${key}
  `;
  const KEY_RULE =
    'must be 12-254 characters with no whitespace or control characters, or an "{{env NAME}}" template';

  test('accepts keys of 20 to 254 characters, and Metabase mb_ keys with + / =, without a warning', () => {
    for (const key of ['a'.repeat(20), 'k'.repeat(254), 'mb_AbC+/=0123456789xyzXYZ', 'kg_9fK2-x.y~z!@#$%^&()[]']) {
      const { desired, warnings } = valid(withKey(JSON.stringify(key)));
      assert.deepEqual(warnings, [], `no warning for ${key}`);
      assert.equal(desired.keys[0]?.digest, sha256(key));
    }
  });

  test('accepts a key of 12 characters with a weak-key warning at the key', () => {
    const text = withKey('abcdefghijkl');
    const { desired, warnings } = valid(text);
    assert.equal(desired.keys[0]?.digest, sha256('abcdefghijkl'));
    assert.equal(warnings.length, 1);
    const w = warnings[0]!;
    assert.equal(w.code, 'weak_key');
    assert.equal(w.path, 'api-keys[0].key');
    assert.match(w.message, /shorter than 20 characters/);
    assertPointsAt(w, text, 'key: abcdefghijkl', 'abcdefghijkl');
  });

  test('warns about a key of 19 characters but not one of 20', () => {
    assert.equal(valid(withKey('a'.repeat(19))).warnings.length, 1);
    assert.equal(valid(withKey('a'.repeat(20))).warnings.length, 0);
  });

  test('rejects a key of 11 characters', () => {
    const text = withKey('abcdefghijk');
    const { errors } = invalid(text);
    assert.equal(errors.length, 1);
    const d = at(errors, 'api-keys[0].key');
    assert.equal(d.message, KEY_RULE);
    assertPointsAt(d, text, 'key: abcdefghijk', 'abcdefghijk');
  });

  test('rejects a key of 255 characters', () => {
    const text = withKey('k'.repeat(255));
    const d = at(invalid(text).errors, 'api-keys[0].key');
    assert.equal(d.message, KEY_RULE);
    assertPointsAt(d, text, 'key: kkk', 'kkk');
  });

  test('rejects a key with a space, a tab or a control character', () => {
    for (const written of ['"abcdefgh ijklmnopqrst"', '"abcdefgh\\tijklmnopqrst"', '"abcdefgh\\x01ijklmnopqrst"', '"abcdefghijklmnopqrst\\n"']) {
      const text = withKey(written);
      const d = at(invalid(text).errors, 'api-keys[0].key');
      assert.equal(d.message, KEY_RULE, `for key ${written}`);
      assertPointsAt(d, text, `key: ${written}`, written);
    }
  });

  test('rejects two entries with the same key, at the second one', () => {
    const text = yaml`
      version: 1
      config:
        api-keys:
          - name: First
            group: admin
            key: same-key-0123456789abcdef
          - name: Second
            group: all-users
            key: same-key-0123456789abcdef
    `;
    const { errors } = invalid(text);
    assert.equal(errors.length, 1);
    const d = at(errors, 'api-keys[1].key');
    assert.equal(d.code, 'duplicate_key');
    assert.equal(d.message, 'same key as api-keys[0]: every entry needs its own key');
    assertPointsAt(d, text, 'key: same-key', 'same-key', 2);
  });

  test('rejects a key_hash that is the digest of another entry\'s key', () => {
    const text = yaml`
      version: 1
      config:
        api-keys:
          - name: First
            group: admin
            key: same-key-0123456789abcdef
          - name: Second
            group: all-users
            key_hash: ${hashOf('same-key-0123456789abcdef')}
    `;
    const d = at(invalid(text).errors, 'api-keys[1].key_hash');
    assert.equal(d.code, 'duplicate_key');
    assert.equal(d.message, 'same key as api-keys[0]: every entry needs its own key');
    assertPointsAt(d, text, 'key_hash:', 'sha256:');
  });
});

describe('key_hash', () => {
  const withHash = (hash: string): string => yaml`
    version: 1
    config:
      api-keys:
        - name: Reporting
          group: admin
          key_hash: "${hash}"
  `;

  test('accepts sha256: and 64 lowercase hex digits, and keeps that digest without a prefix', () => {
    const digest = sha256(REPORTING_KEY);
    const { desired } = valid(withHash(`sha256:${digest}`));
    assert.equal(desired.keys[0]?.digest, digest);
    assert.equal(desired.keys[0]?.prefix, null);
  });

  test('rejects upper-case hex, a wrong length and a missing sha256: prefix', () => {
    const digest = sha256(REPORTING_KEY);
    for (const bad of [`sha256:${digest.toUpperCase()}`, `sha256:${digest.slice(1)}`, `sha256:${digest}0`, digest, `sha1:${digest}`]) {
      const text = withHash(bad);
      const d = at(invalid(text).errors, 'api-keys[0].key_hash');
      assert.equal(d.message, 'must be "sha256:" followed by the 64 lowercase hex digits of the key\'s SHA-256', `for ${bad}`);
      assertPointsAt(d, text, 'key_hash:', '"');
    }
  });
});

describe('{{env NAME}} templates', () => {
  test('expand in a key, with or without spaces inside the braces', () => {
    const { desired } = valid(
      yaml`
        version: 1
        config:
          api-keys:
            - name: Tight
              group: admin
              key: "{{env KEY_A}}"
            - name: Spaced
              group: admin
              key: "{{ env KEY_B }}"
      `,
      { KEY_A: 'key-a-from-the-environment', KEY_B: 'key-b-from-the-environment' },
    );
    assert.equal(desired.keys[0]?.digest, sha256('key-a-from-the-environment'));
    assert.equal(desired.keys[0]?.prefix, 'key-a-f');
    assert.equal(desired.keys[1]?.digest, sha256('key-b-from-the-environment'));
  });

  test('expand inside a longer string value', () => {
    const { desired } = valid(
      yaml`
        version: 1
        config:
          api-keys:
            - name: CI bot
              group: admin
              description: "owned by the {{env TEAM}} team"
              key: abcdefghijklmnopqrstuvwxyz
      `,
      { TEAM: 'data' },
    );
    assert.equal(desired.keys[0]?.description, 'owned by the data team');
  });

  test('report a missing variable by its name, at the templated value', () => {
    const text = yaml`
      version: 1
      config:
        api-keys:
          - name: CI bot
            group: admin
            key: "{{env CI_BOT_KEY}}"
    `;
    const { errors } = invalid(text, {});
    assert.equal(errors.length, 1);
    const d = at(errors, 'api-keys[0].key');
    assert.equal(d.code, 'env_missing');
    const pos = posOf(text, 'key: "{{env', '"{{env');
    assert.equal(formatDiagnostic(d), `${FILE}:${pos.line}:${pos.column}: api-keys[0].key: environment variable "CI_BOT_KEY" is not set`);
  });

  test('report every missing variable of one value', () => {
    const { errors } = invalid(
      yaml`
        version: 1
        config:
          api-keys:
            - name: CI bot
              group: admin
              key: "{{env KEY_PART_ONE}}{{env KEY_PART_TWO}}"
      `,
      { KEY_PART_ONE: 'present-but-not-enough' },
    );
    assert.deepEqual(
      errors.map((e) => e.message),
      ['environment variable "KEY_PART_TWO" is not set'],
    );
    const both = invalid(
      yaml`
        version: 1
        config:
          api-keys:
            - name: CI bot
              group: admin
              key: "{{env KEY_PART_ONE}}{{env KEY_PART_TWO}}"
      `,
      {},
    );
    assert.deepEqual(
      both.errors.map((e) => e.message),
      ['environment variable "KEY_PART_ONE" is not set', 'environment variable "KEY_PART_TWO" is not set'],
    );
  });

  test('expand in a key_hash, which must still be sha256: and 64 hex digits, without quoting the value', () => {
    const text = yaml`
      version: 1
      config:
        api-keys:
          - name: Good
            group: admin
            key_hash: "{{env GOOD_HASH}}"
          - name: Bad
            group: admin
            key_hash: "{{env BAD_HASH}}"
    `;
    const env = { GOOD_HASH: hashOf(REPORTING_KEY), BAD_HASH: 'sha256:not-hex-Zq9' };
    const { errors } = invalid(text, env);
    assert.equal(errors.length, 1);
    const d = at(errors, 'api-keys[1].key_hash');
    assert.equal(d.code, 'schema.format');
    assert.ok(!d.message.includes('not-hex-Zq9'), d.message);
    assertPointsAt(d, text, 'key_hash: "{{env BAD_HASH', '"');
    const good = text.slice(0, text.indexOf('    - name: Bad'));
    const { desired } = valid(good, env);
    assert.equal(desired.keys[0]?.digest, sha256(REPORTING_KEY));
  });

  test('find a variable ignoring case and - / _, as Metabase (environ) does; an exact name wins', () => {
    const { desired } = valid(
      yaml`
        version: 1
        config:
          api-keys:
            - name: Kebab
              group: admin
              key: "{{env ci-bot-key}}"
            - name: Mixed
              group: admin
              key: "{{env Reporting_Key}}"
            - name: Exact
              group: admin
              key: "{{env other_key}}"
      `,
      { CI_BOT_KEY: 'key-of-the-ci-bot-0123456789', REPORTING_KEY: 'key-of-reporting-0123456789', OTHER_KEY: 'upper-case-variable-0123456', other_key: 'exact-name-variable-0123456' },
    );
    assert.deepEqual(desired.keys.map((k) => k.digest), [sha256('key-of-the-ci-bot-0123456789'), sha256('key-of-reporting-0123456789'), sha256('exact-name-variable-0123456')]);
  });

  test('refuse a name that several variables match with different values, naming them and not their values', () => {
    const { errors } = invalid(
      yaml`
        version: 1
        config:
          api-keys:
            - name: Ambiguous
              group: admin
              key: "{{env Ci-Bot-Key}}"
      `,
      { CI_BOT_KEY: 'first-value-0123456789abc', 'ci-bot-key': 'second-value-0123456789abc' },
    );
    const d = at(errors, 'api-keys[0].key');
    assert.equal(d.code, 'env_ambiguous');
    assert.match(d.message, /"CI_BOT_KEY" and "ci-bot-key"/);
    assert.ok(!d.message.includes('value-0123456789'), d.message);
  });

  test('an optional [[ ]] block becomes empty when its variable is unset, so an optional key is refused as too short', () => {
    const text = yaml`
      version: 1
      config:
        api-keys:
          - name: Optional
            group: admin
            description: "owned by [[the {{env TEAM}} team]]"
            key: "[[{{env OPTIONAL_KEY}}]]"
    `;
    const d = at(invalid(text, {}).errors, 'api-keys[0].key');
    assert.equal(d.code, 'schema.format');
    const { desired } = valid(text, { TEAM: 'data', OPTIONAL_KEY: 'optional-key-0123456789ab' });
    assert.equal(desired.keys[0]?.description, 'owned by the data team');
    assert.equal(desired.keys[0]?.digest, sha256('optional-key-0123456789ab'));
  });

  test('refuse a malformed template at the value, as Metabase does', () => {
    const text = yaml`
      version: 1
      config:
        api-keys:
          - name: Malformed
            group: admin
            key: "{{CI_BOT_KEY}}"
    `;
    const d = at(invalid(text, { CI_BOT_KEY: 'key-of-the-ci-bot-0123456789' }).errors, 'api-keys[0].key');
    assert.equal(formatDiagnostic(d), `${FILE}:6:12: api-keys[0].key: invalid template: a template must be "{{env NAME}}"`);
  });

  test('expand in keygate settings too, such as upstream and listen', () => {
    const { desired } = valid(
      yaml`
        version: 1
        config:
          keygate:
            upstream: "{{env UPSTREAM_URL}}"
            listen: "{{env LISTEN_ADDR}}"
          api-keys: []
      `,
      { UPSTREAM_URL: 'http://10.0.0.5:3000', LISTEN_ADDR: '0.0.0.0:8080' },
    );
    assert.equal(desired.settings.upstream, 'http://10.0.0.5:3000');
    assert.equal(desired.settings.listen, '0.0.0.0:8080');
  });
});

describe('groups', () => {
  test('rejects a group declared twice, at the second one', () => {
    const text = yaml`
      version: 1
      config:
        groups:
          - name: analysts
          - name: analysts
            description: again
        api-keys: []
    `;
    const { errors } = invalid(text);
    assert.equal(errors.length, 1);
    const d = at(errors, 'groups[1].name');
    assert.equal(d.code, 'duplicate_group');
    assert.equal(d.message, 'duplicate group name "analysts" (first declared at groups[0])');
    assertPointsAt(d, text, '- name: analysts', 'analysts', 2);
  });

  test('refuses a group named admin, which is built in and reserved', () => {
    const text = yaml`
      version: 1
      config:
        groups:
          - name: admin
            allow: []
        api-keys: []
    `;
    const d = at(invalid(text).errors, 'groups[0].name');
    assert.equal(d.code, 'reserved_group');
    assert.match(d.message, /"admin" is built in and reserved/);
    assertPointsAt(d, text, '- name: admin', 'admin');
  });

  test('lets an all-users entry set the built-in group\'s description and rules', () => {
    const { desired } = valid(yaml`
      version: 1
      config:
        groups:
          - name: all-users
            description: Everyone with a key
            allow:
              - methods: [GET]
                paths: ["/api/health"]
        api-keys:
          - name: Reader
            group: all-users
            key: abcdefghijklmnopqrstuvwxyz
    `);
    const allUsers = desired.groups.filter((g) => g.name === 'all-users');
    assert.equal(allUsers.length, 1, 'all-users stays one group');
    assert.equal(allUsers[0]?.id, 1);
    assert.equal(allUsers[0]?.description, 'Everyone with a key');
    assert.deepEqual(allUsers[0]?.allow, [{ methods: ['GET'], paths: ['/api/health'] }]);
  });

  test('rejects a key whose group is not declared, listing the declared groups', () => {
    const text = yaml`
      version: 1
      config:
        groups:
          - name: analysts
        api-keys:
          - name: Admin API key
            group: admin
            key: abcdefghijklmnopqrstuvwxyz
          - name: Everyone
            group: all-users
            key: bcdefghijklmnopqrstuvwxyza
          - name: Typo
            group: analyst
            key: cdefghijklmnopqrstuvwxyzab
    `;
    const { errors } = invalid(text);
    assert.equal(errors.length, 1);
    const d = at(errors, 'api-keys[2].group');
    assert.equal(d.code, 'unknown_group');
    const pos = posOf(text, 'group: analyst', 'analyst');
    assert.equal(pos.line, 13);
    assert.equal(
      formatDiagnostic(d),
      `${FILE}:13:${pos.column}: api-keys[2].group: unknown group "analyst" (declared: admin, all-users, analysts)`,
    );
  });

  test('accepts Metabase\'s names "Administrators" and "All Users" for the built-in groups', () => {
    const { desired } = valid(yaml`
      version: 1
      config:
        groups:
          - name: All Users
            description: Everyone with a key
            allow: []
        api-keys:
          - name: Root
            group: Administrators
            key: abcdefghijklmnopqrstuvwxyz
          - name: Reader
            group: All Users
            key: bcdefghijklmnopqrstuvwxyza
    `);
    assert.deepEqual(desired.keys.map((k) => [k.name, k.group]), [['Root', 'admin'], ['Reader', 'all-users']]);
    const allUsers = desired.groups.filter((g) => g.id === 1);
    assert.deepEqual(allUsers.map((g) => [g.name, g.description, g.allow]), [['all-users', 'Everyone with a key', []]], 'the entry "All Users" is the built-in all-users');
  });

  test('rejects group names that differ only in case, as Metabase does, naming the first', () => {
    const text = yaml`
      version: 1
      config:
        groups:
          - name: Cool Friends
          - name: cool friends
          - name: all-users
          - name: All Users
        api-keys: []
    `;
    const { errors } = invalid(text);
    assert.deepEqual(
      errors.map((e) => [e.path, e.code, e.message]),
      [
        ['groups[1].name', 'duplicate_group', 'duplicate group name "cool friends" (first declared at groups[0] as "Cool Friends", group names are unique ignoring case)'],
        ['groups[3].name', 'duplicate_group', 'duplicate group name "All Users" (first declared at groups[2] as "all-users", the same built-in group)'],
      ],
    );
    assertPointsAt(at(errors, 'groups[1].name'), text, '- name: cool friends', 'cool friends');
  });

  test('reserves every spelling of the built-in groups\' names but the two of each', () => {
    const text = yaml`
      version: 1
      config:
        groups:
          - name: ADMIN
          - name: administrators
          - name: All-Users
        api-keys: []
    `;
    const { errors } = invalid(text);
    assert.deepEqual(errors.map((e) => [e.path, e.code]), [
      ['groups[0].name', 'reserved_group'],
      ['groups[1].name', 'reserved_group'],
      ['groups[2].name', 'reserved_group'],
    ]);
    assert.match(at(errors, 'groups[1].name').message, /"administrators" is built in and reserved/);
    assert.match(at(errors, 'groups[2].name').message, /write "all-users" or "All Users"/);
  });

  test('a reference must spell the group as declared, with a hint when only the case differs', () => {
    const { errors } = invalid(yaml`
      version: 1
      config:
        groups:
          - name: analysts
        api-keys:
          - name: Reader
            group: Analysts
            key: abcdefghijklmnopqrstuvwxyz
    `);
    assert.equal(
      at(errors, 'api-keys[0].group').message,
      'unknown group "Analysts" (declared: admin, all-users, analysts): did you mean "analysts"? a reference must spell the name as declared',
    );
  });
});

describe('creator', () => {
  test('must be one of users[].email when the file has a users section', () => {
    const text = yaml`
      version: 1
      config:
        users:
          - email: cam@example.com
        api-keys:
          - name: Known
            group: admin
            creator: cam@example.com
            key: abcdefghijklmnopqrstuvwxyz
          - name: Unknown
            group: admin
            creator: bob@example.com
            key: bcdefghijklmnopqrstuvwxyza
    `;
    const { errors } = invalid(text);
    assert.equal(errors.length, 1);
    const d = at(errors, 'api-keys[1].creator');
    assert.equal(d.code, 'unknown_creator');
    assert.equal(d.message, 'creator "bob@example.com" is not one of users[].email');
    assertPointsAt(d, text, 'creator: bob@example.com', 'bob@example.com');
  });

  test('may be any email when the file has no users section', () => {
    const { desired } = valid(yaml`
      version: 1
      config:
        api-keys:
          - name: Anyone
            group: admin
            creator: bob@example.com
            key: abcdefghijklmnopqrstuvwxyz
    `);
    assert.equal(desired.keys[0]?.creator, 'bob@example.com');
  });
});

describe('unknown fields', () => {
  const TYPOS = yaml`
    version: 1
    config:
      keygate:
        upstrem: http://127.0.0.1:3000
      groups:
        - name: analysts
          descripton: Read-only
          allow:
            - method: [GET]
              paths: ["/api/card/**"]
      api-keys:
        - name: CI bot
          gruop: analysts
          group: analysts
          key: abcdefghijklmnopqrstuvwxyz
  `;

  test('are errors in keygate, groups, allow rules and api-keys entries, at the field name', () => {
    const { errors } = invalid(TYPOS);
    assert.equal(errors.length, 4, errors.map(formatDiagnostic).join('\n'));
    const cases: Array<[path: string, field: string]> = [
      ['keygate.upstrem', 'upstrem'],
      ['groups[0].descripton', 'descripton'],
      ['groups[0].allow[0].method', 'method'],
      ['api-keys[0].gruop', 'gruop'],
    ];
    for (const [path, field] of cases) {
      const d = at(errors, path);
      assert.equal(d.code, 'schema.unknown_field');
      assert.ok(d.message.startsWith(`unknown field "${field}"`), d.message);
      assertPointsAt(d, TYPOS, `${field}:`, field);
    }
  });

  test('suggest the field that was probably meant', () => {
    const { errors } = invalid(TYPOS);
    assert.deepEqual(
      errors.map((e) => `${e.path}: ${e.message}`).sort(),
      [
        'api-keys[0].gruop: unknown field "gruop" (did you mean "group"?)',
        'groups[0].allow[0].method: unknown field "method" (did you mean "methods"?)',
        'groups[0].descripton: unknown field "descripton" (did you mean "description"?)',
        'keygate.upstrem: unknown field "upstrem" (did you mean "upstream"?)',
      ],
    );
  });

  test('are allowed in Metabase\'s users entries, which keygate passes over', () => {
    const { warnings } = valid(yaml`
      version: 1
      config:
        users:
          - first_name: Cam
            last_name: Era
            password: 2cans3cans4cans
            is_superuser: true
            email: cam@example.com
        api-keys: []
    `);
    assert.deepEqual(warnings, []);
  });
});

describe('empty sections', () => {
  test('are read as absent, as Metabase reads them', () => {
    const { desired } = valid(yaml`
      version: 1
      config:
        keygate:
        users:
        groups:
        api-keys:
    `);
    assert.deepEqual(desired.keys, []);
    assert.deepEqual(desired.groups.map((g) => g.name), ['all-users', 'admin']);
    assert.equal(desired.settings.listen, '127.0.0.1:8080');
  });
});

describe('Metabase sections', () => {
  test('settings and databases are ignored with a warning, and the file stays valid', () => {
    const text = yaml`
      version: 1
      config:
        settings: {config-from-file-sync-databases: false}
        databases: [{name: Sample PostgreSQL, engine: postgres}]
        api-keys:
          - name: Admin API key
            group: admin
            key: abcdefghijklmnopqrstuvwxyz
    `;
    const { desired, warnings } = valid(text);
    assert.equal(desired.keys.length, 1);
    assert.deepEqual(
      warnings.map((w) => [w.code, w.path]),
      [
        ['ignored_section', 'settings'],
        ['ignored_section', 'databases'],
      ],
    );
    assert.equal(warnings[0]?.message, 'section "settings" is Metabase\'s and is ignored by keygate');
    assert.equal(warnings[0]?.line, posOf(text, 'settings:').line);
    assert.equal(warnings[1]?.line, posOf(text, 'databases: [').line);
  });
});

describe('allow rules', () => {
  const groupAllow = (rules: string): string => yaml`
    version: 1
    config:
      groups:
        - name: analysts
          allow: ${rules}
      api-keys: []
  `;

  test('accept * and ** as whole segments and the HTTP methods', () => {
    const { desired } = valid(
      groupAllow(
        '[{methods: [GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS], paths: ["/api/card/*", "/api/**", "/**", "/api/*/query/**", "/"]}]',
      ),
    );
    const g = desired.groups.find((x) => x.name === 'analysts');
    assert.deepEqual(g?.allow, [
      {
        methods: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'],
        paths: ['/api/card/*', '/api/**', '/**', '/api/*/query/**', '/'],
      },
    ]);
  });

  test('keep an empty list (allows nothing) apart from no rules (allows everything)', () => {
    const { desired } = valid(yaml`
      version: 1
      config:
        groups:
          - name: nothing
            allow: []
          - name: everything
    `);
    assert.deepEqual(desired.groups.find((g) => g.name === 'nothing')?.allow, []);
    assert.equal(desired.groups.find((g) => g.name === 'everything')?.allow, null);
  });

  test('reject a path that does not start with /, once, at the path', () => {
    const text = groupAllow('[{paths: ["/api/card/**", "api/dashboard/**"]}]');
    const { errors } = invalid(text);
    const d = at(errors, 'groups[0].allow[0].paths[1]');
    assert.match(d.message, /must start with "\/"/);
    assertPointsAt(d, text, 'allow:', '"api/dashboard');
  });

  test('reject * or ** inside a segment', () => {
    for (const bad of ['/api/card*', '/api/**x', '/api/c*d/1']) {
      const text = groupAllow(`[{paths: ["/api/ok", "${bad}"]}]`);
      const { errors } = invalid(text);
      assert.equal(errors.length, 1, errors.map(formatDiagnostic).join('\n'));
      const d = at(errors, 'groups[0].allow[0].paths[1]');
      assert.equal(d.code, 'invalid_pattern');
      assert.equal(d.message, `path pattern "${bad}" "*" and "**" must stand alone as a whole path segment`);
      assertPointsAt(d, text, 'allow:', `"${bad}"`);
    }
  });

  test('reject a method outside the HTTP methods', () => {
    const text = groupAllow('[{methods: [GET, FETCH], paths: ["/api/**"]}]');
    const { errors } = invalid(text);
    assert.equal(errors.length, 1);
    const d = at(errors, 'groups[0].allow[0].methods[1]');
    assert.equal(d.code, 'schema.enum');
    assert.equal(d.message, 'must be one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE, CONNECT');
    assertPointsAt(d, text, 'allow:', 'FETCH');
  });

  test('reject a rule without paths', () => {
    const text = groupAllow('[{methods: [GET]}]');
    const d = at(invalid(text).errors, 'groups[0].allow[0].paths');
    assert.equal(d.message, 'missing required field "paths"');
    assertPointsAt(d, text, 'allow:', '{methods');
  });

  test('are checked on keys as well as on groups', () => {
    const text = yaml`
      version: 1
      config:
        api-keys:
          - name: CI bot
            group: admin
            key: abcdefghijklmnopqrstuvwxyz
            allow:
              - paths: ["/api/card/**", "/api/x**"]
    `;
    const { errors } = invalid(text);
    assert.equal(errors.length, 1);
    const d = at(errors, 'api-keys[0].allow[0].paths[1]');
    assert.equal(d.code, 'invalid_pattern');
    assertPointsAt(d, text, '- paths:', '"/api/x**"');
  });
});

describe('expires_at', () => {
  const withExpiry = (value: string): string => yaml`
    version: 1
    config:
      api-keys:
        - name: Temp
          group: admin
          key: abcdefghijklmnopqrstuvwxyz
          expires_at: ${value}
  `;

  test('accepts RFC 3339 times in UTC or with an offset, and keeps them in UTC', () => {
    const cases: Array<[string, string]> = [
      ['2027-06-30T00:00:00Z', '2027-06-30T00:00:00.000Z'],
      ['2027-06-30T02:00:00+02:00', '2027-06-30T00:00:00.000Z'],
      ['"2027-06-29T19:30:00.250-04:30"', '2027-06-30T00:00:00.250Z'],
      ['2028-02-29T12:00:00Z', '2028-02-29T12:00:00.000Z'],
    ];
    for (const [written, stored] of cases) {
      const { desired, warnings } = valid(withExpiry(written), {}, new Date('2026-01-01T00:00:00Z'));
      assert.equal(desired.keys[0]?.expiresAt, stored, `for ${written}`);
      assert.deepEqual(warnings, []);
    }
  });

  test('rejects a value that is not an RFC 3339 time', () => {
    for (const bad of ['next week', '2027-06-30', '"2027-06-30 12:00"', '2027-06-30T00:00:00', '30/06/2027']) {
      const text = withExpiry(bad);
      const d = at(invalid(text).errors, 'api-keys[0].expires_at');
      assert.equal(d.message, 'must be an RFC 3339 time, e.g. 2027-06-30T00:00:00Z', `for ${bad}`);
      assertPointsAt(d, text, 'expires_at:', bad);
    }
  });

  test('rejects a date and time that do not exist, such as 2027-02-30', () => {
    for (const bad of ['2027-02-30T00:00:00Z', '2027-02-29T00:00:00Z', '2027-13-01T00:00:00Z', '2027-06-30T24:30:00Z']) {
      const text = withExpiry(bad);
      const { errors } = invalid(text);
      assert.equal(errors.length, 1, `for ${bad}`);
      const d = at(errors, 'api-keys[0].expires_at');
      assert.equal(d.code, 'invalid_time');
      assert.equal(d.message, `"${bad}" is not a real date and time`);
      assertPointsAt(d, text, 'expires_at:', bad);
    }
  });

  test('warns, without failing, about a key that has already expired', () => {
    const text = withExpiry('2020-01-01T00:00:00Z');
    const { desired, warnings } = valid(text, {}, new Date('2026-01-01T00:00:00Z'));
    assert.equal(desired.keys[0]?.expiresAt, '2020-01-01T00:00:00.000Z');
    assert.equal(warnings.length, 1);
    assert.equal(warnings[0]?.code, 'expired');
    assert.equal(warnings[0]?.path, 'api-keys[0].expires_at');
  });
});

describe('YAML', () => {
  test('a syntax error is reported with its line and column', () => {
    const text = yaml`
      version: 1
      config:
        api-keys:
          - name: CI bot
            group: admin
            description: }
    `;
    const { errors } = invalid(text);
    assert.equal(errors.length, 1);
    const d = errors[0]!;
    assert.match(d.code, /^yaml\./);
    assert.match(d.message, /^YAML syntax: /);
    assert.equal(d.path, '');
    assertPointsAt(d, text, 'description: }', '}');
  });

  test('a map that repeats a key is an error at the repeated key', () => {
    const text = yaml`
      version: 1
      config:
        api-keys:
          - name: CI bot
            group: analysts
            key: abcdefghijklmnopqrstuvwxyz
            group: admin
    `;
    const { errors } = invalid(text);
    assert.equal(errors.length, 1);
    const d = errors[0]!;
    assert.equal(d.code, 'yaml.duplicate_key');
    assert.equal(d.path, '');
    assert.equal(formatDiagnostic(d), `${FILE}:7:7: YAML syntax: map keys must be unique`);
    assertPointsAt(d, text, 'group: admin', 'group');
  });

  test('a file that is not UTF-8 is rejected at the first bad byte', () => {
    const bytes = Buffer.concat([Buffer.from('version: 1\nconfig:\n  api-keys:\n    - name: "caf'), Buffer.from([0xe9]), Buffer.from('"\n')]);
    const { errors } = invalid(bytes);
    assert.deepEqual(
      errors.map((e) => [e.code, e.line, e.column]),
      [['invalid_utf8', 4, 17]],
    );
  });

  test('an empty file is an error', () => {
    const { errors } = invalid('');
    assert.deepEqual(
      errors.map((e) => e.code),
      ['empty'],
    );
  });
});

describe('one pass', () => {
  test('a file with three different errors gets three diagnostics', () => {
    const text = yaml`
      version: 1
      config:
        groups:
          - name: analysts
        api-keys:
          - name: Typo field
            group: analysts
            key: abcdefghijklmnopqrstuvwxyz
            descriptin: oops
          - name: Missing env
            group: analysts
            key: "{{env NOT_SET_ANYWHERE}}"
          - name: Typo group
            group: analyst
            key: bcdefghijklmnopqrstuvwxyza
    `;
    const { errors } = invalid(text, {});
    assert.deepEqual(
      errors.map((e) => [e.path, e.code]).sort(),
      [
        ['api-keys[0].descriptin', 'schema.unknown_field'],
        ['api-keys[1].key', 'env_missing'],
        ['api-keys[2].group', 'unknown_group'],
      ],
    );
    assertPointsAt(at(errors, 'api-keys[0].descriptin'), text, 'descriptin:', 'descriptin');
    assertPointsAt(at(errors, 'api-keys[1].key'), text, 'key: "{{env', '"');
    assertPointsAt(at(errors, 'api-keys[2].group'), text, 'group: analyst', 'analyst', 3);
  });

  test('reports warnings alongside the errors of an invalid file', () => {
    const { errors, warnings } = invalid(yaml`
      version: 1
      config:
        settings: {}
        api-keys:
          - name: Weak
            group: nobody
            key: abcdefghijklm
    `);
    assert.deepEqual(
      errors.map((e) => e.code),
      ['unknown_group'],
    );
    assert.deepEqual(
      warnings.map((w) => w.code).sort(),
      ['ignored_section', 'weak_key'],
    );
  });
});
