/**
 * Writes docs/configuration.md from schemas/config.schema.json (structure,
 * types, constraints, descriptions) and src/config/defaults.ts (defaults), so
 * that the reference cannot drift from what keygate checks. The hand-written
 * sections (file discovery, templating, rule matching, key vs key_hash,
 * Metabase compatibility) live here too, so the whole page is one output.
 *
 *   node --import tsx scripts/gen-config-docs.ts      (or: npm run docs)
 *
 * test/docs.test.ts regenerates the page in memory and fails when the
 * committed file differs.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { DEFAULT_SETTINGS } from '../src/config/defaults.ts';
import type { Settings } from '../src/config/types.ts';

export const SCHEMA_FILE = fileURLToPath(new URL('../schemas/config.schema.json', import.meta.url));
export const OUTPUT_FILE = fileURLToPath(new URL('../docs/configuration.md', import.meta.url));

interface Schema {
  $ref?: string;
  description?: string;
  type?: string | string[];
  /** Set by the resolver: the schema also allows null (a section left empty). */
  nullable?: boolean;
  properties?: Record<string, Schema>;
  required?: string[];
  additionalProperties?: boolean;
  items?: Schema;
  anyOf?: Schema[];
  oneOf?: Schema[];
  enum?: unknown[];
  pattern?: string;
  minLength?: number;
  maxLength?: number;
  minItems?: number;
  minimum?: number;
  maximum?: number;
  exclusiveMaximum?: number;
  definitions?: Record<string, Schema>;
  title?: string;
}

/** How a default that is "none" reads, per setting. */
const NULL_DEFAULTS: Partial<Record<keyof Settings, string>> = {
  upstream: 'none: `serve` starts the built-in demo upstream',
  database: '`keygate.db` in `$KEYGATE_DATA_DIR`, or beside the config file',
  maxDeletes: 'refuse when more than 10 **and** more than a quarter of the config-owned keys would be deleted',
  tls: 'none: plain HTTP',
  adminTls: 'as `tls`',
};

/**
 * When a changed setting takes effect in a running `keygate serve`. Kept here,
 * not in the schema; the generator refuses to run when a setting is missing.
 */
const TAKES_EFFECT: Record<string, string> = {
  upstream: 'on reload (a daemon started with the demo upstream switches to it and stops the demo)',
  listen: 'at the next restart (a change is logged as a warning)',
  admin_listen: 'at the next restart (a change is logged as a warning)',
  database: 'at the next restart (a change is logged as a warning)',
  key_header: 'on reload',
  forward_key: 'on reload',
  trusted_proxies: 'on reload',
  upstream_timeout_ms: 'on reload',
  failed_auth_per_minute: 'on reload (the failed-auth counters start afresh)',
  max_deletes: 'on the reconcile that reads it',
  reload_debounce_ms: 'at the next restart',
  shutdown_grace_ms: 'on reload',
  last_used_flush_ms: 'at the next restart',
  workers: 'at the next restart (a change is logged as a warning)',
  tls: 'at the next restart for the file names (a change is logged as a warning); new contents of the files, at once',
  admin_tls: 'at the next restart for the file names (a change is logged as a warning); new contents of the files, at once',
};

const camel = (snake: string): string => snake.replace(/_([a-z])/g, (_m, c: string) => c.toUpperCase());
const code = (s: string): string => (s.includes('`') ? `\`\` ${s} \`\`` : `\`${s}\``);

function resolver(root: Schema): (s: Schema) => Schema {
  const resolve = (s: Schema): Schema => {
    // A section that may be left empty (YAML null) documents as its non-null type, marked nullable.
    if (Array.isArray(s.type)) {
      const types = s.type.filter((t) => t !== 'null');
      return { ...s, type: types.join(' or '), nullable: s.type.includes('null') };
    }
    if (s.$ref === undefined) return s;
    const m = /^#\/definitions\/(.+)$/.exec(s.$ref);
    const target = m === null ? undefined : root.definitions?.[m[1] as string];
    if (target === undefined) throw new Error(`unresolvable $ref ${s.$ref}`);
    const { $ref: _r, ...siblings } = s;
    // A description next to a $ref overrides the target's.
    return { ...resolve(target), ...siblings };
  };
  return resolve;
}

function isTemplate(s: Schema): boolean {
  return s.pattern !== undefined && s.pattern.includes('env');
}

/** A type and its constraints, as a reader wants them. */
function typeText(s: Schema, resolve: (s: Schema) => Schema): string {
  if (s.$ref === '#/definitions/allow') return 'list of [allow rules](#allow-rules-and-how-they-match)';
  const r = resolve(s);
  if (r.anyOf !== undefined) {
    return r.anyOf
      .map((b) => {
        const rb = resolve(b);
        if (isTemplate(rb)) return 'an `{{env NAME}}` template';
        return typeText({ type: r.type ?? 'string', ...rb }, resolve);
      })
      .join(', or ');
  }
  const parts: string[] = [];
  switch (r.type) {
    case 'array': {
      const items = r.items === undefined ? 'values' : typeText(r.items, resolve);
      const atLeast = r.minItems === undefined ? '' : `; at least ${r.minItems} item${r.minItems === 1 ? '' : 's'}`;
      return `list of ${items}${atLeast}`;
    }
    case 'object':
      parts.push('mapping');
      break;
    case undefined:
      parts.push('any');
      break;
    default:
      parts.push(String(r.type));
  }
  if (r.enum !== undefined) parts.push(`one of ${r.enum.map((v) => code(String(v))).join(', ')}`);
  if (r.minLength !== undefined && r.maxLength !== undefined) parts.push(`${r.minLength}–${r.maxLength} characters`);
  else if (r.minLength !== undefined) parts.push(`at least ${r.minLength} character${r.minLength === 1 ? '' : 's'}`);
  else if (r.maxLength !== undefined) parts.push(`at most ${r.maxLength} characters`);
  if (r.minimum !== undefined) parts.push(`≥ ${r.minimum}`);
  if (r.maximum !== undefined) parts.push(`≤ ${r.maximum}`);
  if (r.exclusiveMaximum !== undefined) parts.push(`< ${r.exclusiveMaximum}`);
  if (r.pattern !== undefined) parts.push(`matching ${code(r.pattern)}`);
  const [head, ...rest] = parts;
  return rest.length === 0 ? (head as string) : `${head as string} (${rest.join(', ')})`;
}

function defaultText(field: string): string {
  const key = camel(field) as keyof Settings;
  if (!(key in DEFAULT_SETTINGS)) throw new Error(`setting "${field}" has no default in src/config/defaults.ts`);
  const v = DEFAULT_SETTINGS[key];
  if (v === null) {
    const text = NULL_DEFAULTS[key];
    if (text === undefined) throw new Error(`setting "${field}" defaults to null: describe it in NULL_DEFAULTS`);
    return text;
  }
  if (Array.isArray(v)) return v.length === 0 ? 'empty list' : code(JSON.stringify(v));
  return code(String(v));
}

interface FieldOptions {
  /** Prefix of the heading, e.g. `keygate.`. */
  path: string;
  settings?: boolean;
}

function renderFields(obj: Schema, resolve: (s: Schema) => Schema, opts: FieldOptions): string[] {
  const out: string[] = [];
  const required = new Set(obj.required ?? []);
  for (const [name, raw] of Object.entries(obj.properties ?? {})) {
    const s = resolve(raw);
    out.push(`#### ${code(`${opts.path}${name}`)}`, '');
    if (s.description !== undefined) out.push(s.description, '');
    out.push(`- **Type:** ${typeText(raw, resolve)}`);
    out.push(`- **Required:** ${required.has(name) ? 'yes' : 'no'}`);
    if (opts.settings === true) {
      out.push(`- **Default:** ${defaultText(name)}`);
      const when = TAKES_EFFECT[name];
      if (when === undefined) throw new Error(`setting "${name}": say when a change takes effect in TAKES_EFFECT`);
      out.push(`- **Takes effect:** ${when}`);
    }
    out.push('');
  }
  return out;
}

function strictness(obj: Schema): string {
  return obj.additionalProperties === false
    ? 'Any other field is an error, so a typo is caught (with a "did you mean" hint when a known field is close).'
    : 'Other fields are allowed and ignored: they belong to Metabase.';
}

/** A type in a word for the summary table: `mapping`, `list`, `integer`, or the one literal an enum allows (`false`, `auto`). */
function shortType(s: Schema): string {
  if (s.enum !== undefined && s.enum.length === 1) return code(String(s.enum[0]));
  return s.type === 'array' ? 'list' : s.type === 'object' ? 'mapping' : String(s.type ?? 'any');
}

function summaryTable(obj: Schema, resolve: (s: Schema) => Schema, settings: boolean): string[] {
  const required = new Set(obj.required ?? []);
  const head = settings ? ['| Setting | Type | Default |', '|---|---|---|'] : ['| Field | Type | Required |', '|---|---|---|'];
  const rows = Object.entries(obj.properties ?? {}).map(([name, raw]) => {
    const s = resolve(raw);
    const base = s.anyOf !== undefined ? [...new Set(s.anyOf.map((b) => shortType({ type: s.type ?? 'string', ...resolve(b) })))].join(', or ') : shortType(s);
    const type = s.nullable === true ? `${String(base)}, or empty` : base;
    const third = settings ? defaultText(name) : required.has(name) ? 'yes' : 'no';
    return `| ${code(name)} | ${type} | ${third.replace(/\|/g, '\\|')} |`;
  });
  return [...head, ...rows, ''];
}

export function renderConfigDocs(schema: Schema): string {
  const resolve = resolver(schema);
  const top = schema;
  const config = resolve(top.properties?.config ?? {});
  const sections = config.properties ?? {};
  const keygate = resolve(sections.keygate ?? {});
  const users = resolve(sections.users ?? {});
  const userItem = resolve(users.items ?? {});
  const groups = resolve(sections.groups ?? {});
  const groupItem = resolve(groups.items ?? {});
  const apiKeys = resolve(sections['api-keys'] ?? {});
  const keyItem = resolve(apiKeys.items ?? {});
  const allow = resolve({ $ref: '#/definitions/allow' });
  const rule = resolve(allow.items ?? {});

  for (const name of Object.keys(keygate.properties ?? {})) {
    if (TAKES_EFFECT[name] === undefined) throw new Error(`setting "${name}": say when a change takes effect in TAKES_EFFECT`);
  }
  for (const name of Object.keys(TAKES_EFFECT)) {
    if (keygate.properties?.[name] === undefined) throw new Error(`TAKES_EFFECT names "${name}", which the schema does not have`);
  }

  const exactlyOne = (keyItem.oneOf ?? [])
    .map((b) => (b.required ?? []).map(code).join(' + '))
    .join(' or ');

  const lines: string[] = [
    '<!-- Generated by scripts/gen-config-docs.ts from schemas/config.schema.json and src/config/defaults.ts.',
    '     Do not edit by hand: change the schema or the generator, then run `npm run docs`. -->',
    '',
    '# Configuration reference',
    '',
    `${top.description ?? ''}`,
    '',
    'The structure below is generated from [`schemas/config.schema.json`](../schemas/config.schema.json),',
    'the one source of truth that `keygate validate` checks against (`keygate schema` prints it).',
    'Editors that use the YAML language server validate and complete the file with this modeline',
    'as its first line:',
    '',
    '```yaml',
    '# yaml-language-server: $schema=./schemas/config.schema.json',
    '```',
    '',
    '- [Where keygate finds the file](#where-keygate-finds-the-file)',
    '- [A complete example](#a-complete-example)',
    '- [Top level](#top-level)',
    '- [`config.keygate`: settings](#configkeygate-settings)',
    '- [`config.users`](#configusers)',
    '- [`config.groups`](#configgroups)',
    '- [`config.api-keys`](#configapi-keys)',
    '- [Allow rules and how they match](#allow-rules-and-how-they-match)',
    '- [`{{env NAME}}` templates](#env-name-templates)',
    '- [`key` or `key_hash`](#key-or-key_hash)',
    '- [Checks beyond the schema](#checks-beyond-the-schema)',
    '- [Metabase compatibility](#metabase-compatibility)',
    '',
    '## Where keygate finds the file',
    '',
    'Every command looks for the config file in this order and uses the first that is given:',
    '',
    '1. `--config FILE` (or `-c FILE`);',
    '2. the environment variable `KEYGATE_CONFIG`;',
    "3. the environment variable `MB_CONFIG_FILE_PATH` (Metabase's own variable, so one setting serves both);",
    '4. `./config.yml` in the current folder, if it exists;',
    '5. `./config.yaml` in the current folder, if it exists.',
    '',
    'An empty variable counts as unset. When none of them applies, the command fails with',
    '`no config file: pass --config FILE, set KEYGATE_CONFIG or MB_CONFIG_FILE_PATH, or create ./config.yml`.',
    '',
    'The SQLite database is found the same way: `--db FILE`, else `$KEYGATE_DB`, else',
    '`keygate.database` from the file, else `keygate.db` in `$KEYGATE_DATA_DIR` or, without it, beside',
    "the config file. Relative paths from the file are resolved against the config file's folder;",
    '`--db`, `$KEYGATE_DB` and `$KEYGATE_DATA_DIR` against the current folder. `$KEYGATE_DATA_DIR` names only',
    "the default's folder (a container image sets it to its volume), so `keygate.database` in the file still",
    'wins over it, where `$KEYGATE_DB` would win over the file. The database',
    'is created with mode 0600 when it does not exist. A `postgres://` or `postgresql://` URL in any of',
    'these places selects a PostgreSQL database instead, for several replicas',
    '([operations.md](operations.md#running-several-replicas)).',
    '',
    '## A complete example',
    '',
    '```yaml',
    '# yaml-language-server: $schema=./schemas/config.schema.json',
    'version: 1',
    'config:',
    '  keygate:                       # keygate\'s own settings; every one is optional',
    '    upstream: http://127.0.0.1:3000',
    '    listen: 127.0.0.1:8080',
    '    admin_listen: 127.0.0.1:8081',
    '  users:                         # Metabase\'s section: keygate reads only the emails',
    '    - email: cam@example.com',
    '      first_name: Cam',
    '  groups:',
    '    - name: analysts',
    '      description: Read-only access to questions and dashboards',
    '      allow:',
    '        - methods: [GET, HEAD]',
    '          paths: ["/api/card/**", "/api/dashboard/**"]',
    '  api-keys:',
    '    - name: "Admin API key"',
    '      group: admin',
    '      description: "API key with admin permissions."',
    '      creator: cam@example.com',
    '      key: mb_firsttestapikey_0000',
    '    - name: "CI bot"',
    '      group: analysts',
    '      key: "{{env CI_BOT_KEY}}"              # quoted: a bare {{ starts a YAML mapping',
    '    - name: "Reporting"',
    '      group: analysts',
    '      key_hash: "sha256:0fd589139252056b2120e313376b1185d6dad643ca1a3008d24292f4b1228a42"',
    '      expires_at: 2027-06-30T00:00:00Z',
    '      allow:                                # narrows the group\'s rules, never widens them',
    '        - methods: [GET]',
    '          paths: ["/api/dashboard/**"]',
    '```',
    '',
    '## Top level',
    '',
    ...summaryTable(top, resolve, false),
    ...renderFields(top, resolve, { path: '' }),
    `\`config\` holds these sections. ${strictness(config)}`,
    'keygate warns (it does not fail) about any section it does not use, such as Metabase\'s `settings`',
    'or `databases`, and about top-level fields other than `version` and `config`.',
    '',
    ...summaryTable(config, resolve, false),
    '## `config.keygate`: settings',
    '',
    `${keygate.description ?? ''} ${strictness(keygate)}`,
    'Defaults come from `src/config/defaults.ts`. The `serve` flags `--listen`, `--admin-listen` and',
    '`--upstream` override `listen`, `admin_listen` and `upstream`.',
    '',
    ...summaryTable(keygate, resolve, true),
    ...renderFields(keygate, resolve, { path: 'keygate.', settings: true }),
    '## `config.users`',
    '',
    `${users.description ?? ''} Each entry is a ${typeText(users.items ?? {}, resolve)}. ${strictness(userItem)}`,
    '',
    ...renderFields(userItem, resolve, { path: 'users[].' }),
    '## `config.groups`',
    '',
    `${groups.description ?? ''} ${strictness(groupItem)}`,
    '',
    'The built-in groups:',
    '',
    '| name in the file | Metabase\'s name (API, admin page, `keys list`) | id | may call |',
    '|---|---|---|---|',
    '| `all-users` | All Users | 1 | every route, unless a `groups` entry named `all-users` gives it `allow` rules |',
    '| `admin` | Administrators | 2 | every route, and the management API; reserved: it cannot be declared |',
    '',
    'The file may use either name: `group: Administrators` is `group: admin`, and a `groups` entry named',
    '`All Users` is the one named `all-users` (Metabase\'s own config file knows only `admin` and',
    '`all-users`, so a file that Metabase reads too keeps to those). Plans and the proxy\'s',
    '`x-api-key-group` header always use the file names `admin` and `all-users`. Group names are unique',
    'ignoring case, as in Metabase: `Analysts` beside `analysts` is an error (`duplicate_group`), a name',
    'that differs from a built-in one only in case is reserved, and a reference (`api-keys[].group`)',
    'must spell the name as declared. When the file renames a group only in case, the group keeps its',
    'row (and its keys); an api-owned group whose name matches ignoring case is adopted and renamed.',
    '',
    'A custom group gets an id derived from its name, so replicas that apply the same file agree.',
    'A group without `allow` may call every route of the upstream; `allow: []` allows nothing.',
    '',
    ...summaryTable(groupItem, resolve, false),
    ...renderFields(groupItem, resolve, { path: 'groups[].' }),
    '### Deleting or renaming a group',
    '',
    'A group the file no longer declares is deleted (renaming one deletes the old name and creates the',
    'new). Its config keys are whatever the file now says. Its **api-owned** keys (made through the',
    '[management API](management-api.md) or the admin page) move to `all-users`, as in Metabase, but',
    'never gain a route by it: each takes the deleted group\'s `allow` rules as its own `allow`. A key',
    'may call a route only when its group and its own rules both allow it, so it keeps the routes that',
    '`all-users` and the old group both allow, and gains none. (A group without rules allowed every',
    'route: its keys simply get `all-users`\' routes.) An admin moves such a key to a group of its own',
    'through the management API.',
    '',
    '`keygate plan` shows each move, with its reason, for example:',
    '',
    '```text',
    '~ update key "Made in the UI": group "analysts" → "all-users"; allow none → [{"methods":["GET"],"paths":["/api/card/**"]}] (group "analysts" is deleted: the api-owned key moves to all-users and keeps the rules of "analysts" as its own, so it gains no route)',
    '```',
    '',
    'The [deletion guard](#keygatemax_deletes) counts these moves as well as deleted keys: a change',
    'that deletes a group holding many api-owned keys is refused like one that deletes many keys.',
    '',
    '## `config.api-keys`',
    '',
    `${apiKeys.description ?? ''} Exactly one of ${exactlyOne} must be given. ${strictness(keyItem)}`,
    "A key's id is derived from its name, so replicas that apply the same file agree on ids. Renaming",
    'an entry deletes the old key and creates a new one.',
    '',
    ...summaryTable(keyItem, resolve, false),
    ...renderFields(keyItem, resolve, { path: 'api-keys[].' }),
    '## Allow rules and how they match',
    '',
    `\`groups[].allow\` and \`api-keys[].allow\`: ${allow.description ?? ''} Each rule is a ${typeText(allow.items ?? {}, resolve)}. ${strictness(rule)}`,
    '',
    ...summaryTable(rule, resolve, false),
    ...renderFields(rule, resolve, { path: 'allow[].' }),
    'How a request is matched:',
    '',
    '- A request passes a list of rules when **one** rule admits it: its `methods` (if any) contain the',
    '  request method, and one of its `paths` matches the path. Methods are exact: `GET` does not imply',
    '  `HEAD`, so list both when clients send `HEAD`.',
    "- A key may call a route when its group's rules admit it **and**, if the key has its own `allow`,",
    "  those admit it too. A key's rules can only narrow its group's, never widen them. Keys of the",
    '  `admin` group pass every rule.',
    '- In a pattern, `*` matches exactly one path segment and `**` any number of segments, zero',
    '  included: `/api/card/**` matches `/api/card`, `/api/card/1` and `/api/card/1/query`;',
    '  `/api/*/query` matches `/api/card/query` but not `/api/card/1/query`. `*` and `**` must be',
    '  whole segments (`/api/card*` is an error). Other segments match literally and case-sensitively.',
    '  A trailing `/` is ignored on both sides.',
    '- The query string is never matched.',
    '- Paths are matched **after normalisation**, and the normalised path is what is forwarded, so',
    '  the upstream never sees a path other than the one that was checked: percent-encoded unreserved',
    '  characters are decoded (`%7E` → `~`, `%41` → `A`), other escapes are upper-cased, `//` collapses,',
    '  `.` segments are dropped and `..` removes its parent. A path that cannot be normalised safely is',
    '  refused with 400 `bad_request`, never matched loosely: an encoded `/`, `\\` or NUL (`%2F`, `%5C`,',
    '  `%00`), a malformed escape, a raw backslash, space, control or non-ASCII character, a `..` that',
    '  climbs above the root, or a request target that is not a path.',
    '- Patterns may not contain `.` or `..` segments, spaces, `?`, `#` or `\\`.',
    '',
    '## `{{env NAME}}` templates',
    '',
    "Metabase's templating, read as Metabase's config-file loader reads it: inside any string value of",
    'the `keygate`, `groups` and `api-keys` sections, `{{env NAME}}` is replaced by the environment',
    'variable `NAME`. Spaces inside the braces are allowed, and several templates may share one string.',
    'Templates are expanded before the schema check, so the expanded value is what is checked.',
    '',
    '```yaml',
    'version: 1',
    'config:',
    '  keygate:',
    '    upstream: "{{env UPSTREAM_URL}}"',
    '  api-keys:',
    '    - name: "CI bot"',
    '      group: all-users',
    '      key: "{{env CI_BOT_KEY}}"',
    '```',
    '',
    '- **Quote the value.** Unquoted, YAML reads `{{env CI_BOT_KEY}}` as a nested mapping and the',
    '  schema reports the field as the wrong type.',
    '- **Names are matched as Metabase matches them** (through the environ library): case does not',
    '  matter and `-`, `_` and `.` are alike, so `{{env ci-bot-key}}` and `{{env Ci_Bot_Key}}` both read',
    '  `CI_BOT_KEY`. A variable of exactly the given name wins; when several other variables match with',
    '  different values (`CI_BOT_KEY` and `ci-bot-key`), that is an error (`env_ambiguous`) naming them.',
    '  Metabase\'s kebab-casing of camelCase names is honoured too (`{{env ciBotKey}}` reads `CI_BOT_KEY`).',
    '- **A missing variable is an error** that names the variable and its position:',
    '  `config.yml:8:12: api-keys[0].key: environment variable "CI_BOT_KEY" is not set`. (Metabase',
    '  silently uses the empty string; keygate refuses, so a key is never quietly different from the',
    '  one intended.) An empty variable is not missing: it expands to the empty string (which then fails',
    '  the length check of `key`).',
    '- **`[[ … ]]` is optional**, as in Metabase: `"[[{{env EXTRA}}]]"` is the value of `EXTRA`, or',
    '  the empty string when `EXTRA` is unset or empty; text inside the brackets goes with it',
    '  (`"[[before-{{env EXTRA}}-after]]"` is `before-…-after` or nothing). A `[[ ]]` must contain a',
    '  template. An empty optional `key` still fails the length check, so a key never silently vanishes.',
    '- **Escaping:** a value that is exactly `{{{ … }}}` is kept literally, trimmed, without the outer',
    '  braces. Of three or more `{` in a row, only the last two open a template (`{{{env X}}` is `{`',
    '  followed by the value).',
    '- **Anything else between `{{ }}`** (`{{CI_BOT_KEY}}`, `{{env}}`), an unclosed `{{` or `[[`, or a',
    '  `[[ ]]` without a template is an error (`invalid_template`), as in Metabase. A value is expanded',
    '  once: a variable whose value contains `{{env …}}` is not expanded again.',
    '- **Secrets stay secret.** No error, warning, plan, log line or status page quotes a value that came',
    '  from a template.',
    '- `keygate validate`, `plan` and `apply` need the same variables as `serve`; in CI, set',
    '  placeholders (see [examples/gitops](../examples/gitops/)).',
    '- `users` and Metabase\'s own sections are not templated by keygate.',
    '- A reload (file change or SIGHUP) reads the environment of the running process, which does not',
    '  change: to change a templated secret, restart keygate with the new value.',
    '',
    '## `key` or `key_hash`',
    '',
    'Each key entry carries exactly one of them:',
    '',
    '- `key` is the key itself (12–254 characters, no whitespace or control characters), usually from',
    "  an `{{env NAME}}` template so that it never sits in git. Metabase's `mb_…` keys qualify. A key",
    '  shorter than 20 characters is accepted with a warning (`weak_key`). keygate stores only its',
    '  SHA-256 and its first 7 characters (the display prefix that `masked_key` and plans show).',
    '- `key_hash` is `sha256:` followed by the 64 lowercase hex digits of the SHA-256 of the full key.',
    '  Only the digest is in the file, so the file can live in git in the open; the key is handed to',
    '  its user out of band. Plans and listings show such a key as `(hash only)` / `*******…`, since',
    '  keygate never saw its prefix.',
    '',
    'Get a hash with `keygate keys hash KEY` (or the key on stdin), or let `keygate keys generate` make',
    'a new key and print the entry:',
    '',
    '```console',
    '$ npx keygate keys generate --name "CI bot" --group analysts',
    'New API key (shown once, store it now; keygate keeps only its hash):',
    '',
    '  kg_IqAh4VMnvIx4ZJhOcsDSxKMwIvRbE7nT2jRhlTAgQ4eQLZoga',
    '',
    'Add this entry under config.api-keys:',
    '',
    '  - name: CI bot',
    '    group: analysts',
    '    key_hash: sha256:42359fc3a28614ffd6df33863b6262ed24949f8bcea5373af143dd982d1ae10c',
    '```',
    '',
    'Generated keys are `kg_` (or `--prefix`), 43 random base62 characters (32 bytes) and a',
    '6-character checksum, so a secret scanner can recognise them. Switching an entry between `key`',
    'and `key_hash` for the same key is not a change: the digest is the same.',
    '',
    'Two entries with the same key (or the same digest) are an error.',
    '',
    '## Checks beyond the schema',
    '',
    '`keygate validate` reports every problem of a file in one pass, in file order, each with file, line,',
    'column, the path inside the document and the rule that failed (`--json` gives the rule as `code`).',
    'A YAML slip is reported once, where it is, with what to fix, and not again for every line it throws',
    'off:',
    '',
    '| code | error or warning | when |',
    '|---|---|---|',
    '| `env_missing` | error | an `{{env NAME}}` variable is not set |',
    '| `env_ambiguous` | error | several environment variables match one `{{env NAME}}` (ignoring case and `-`/`_`) with different values |',
    '| `invalid_template` | error | a `{{ }}` that is not `{{env NAME}}`, an unclosed `{{` or `[[`, or a `[[ ]]` without a template |',
    '| `schema.*` | error | the structure does not match the schema (`schema.unknown_field`, `schema.required`, `schema.type`, `schema.format`, `schema.key_or_hash`, `schema.version`, …) |',
    '| `yaml.*` | error | the file is not valid YAML (syntax, duplicate mapping keys, several documents, an alias bomb); `yaml.bad_indent` and `yaml.tab_as_indent` say to check the indentation, `yaml.missing_quote` points at the quote that is never closed |',
    '| `unquoted_template`, `yaml.unquoted_template` | error | an `{{env NAME}}` template is not quoted, so YAML reads it as a map: `key: "{{env NAME}}"` |',
    '| `misplaced_field` | error | a field of an `api-keys` or `groups` entry, or a `keygate` setting, is indented as if it were a section of `config` |',
    '| `invalid_utf8`, `empty`, `file_not_found`, `unreadable` | error | the file cannot be read as a config |',
    '| `duplicate_name` | error | two keys share a `name` |',
    '| `duplicate_key` | error | two keys share a key or digest |',
    '| `duplicate_group` | error | two groups share a `name`, ignoring case |',
    '| `reserved_group` | error | a group is named `admin` or `Administrators` (any case), or differs from `all-users` / `All Users` only in case |',
    '| `unknown_group` | error | a key names a group that is neither built in nor declared (fail closed: a typo never grants access) |',
    '| `unknown_creator` | error | a `creator` is not one of `users[].email` while a `users` section exists |',
    '| `invalid_pattern` | error | a path pattern has a partial `*`, a `.`/`..` segment, or a forbidden character |',
    '| `invalid_time` | error | `expires_at` has the right shape but is not a real time (e.g. February 30) |',
    '| `weak_key` | warning | a `key` is shorter than 20 characters |',
    '| `expired` | warning | `expires_at` is in the past: the key will be refused |',
    '| `ignored_section` | warning | a section or top-level field that keygate does not use |',
    '',
    'Warnings never fail `validate` (exit 0).',
    '',
    '## Metabase compatibility',
    '',
    "keygate reads Metabase's config file (the format of its \"Configuration file\" docs page, `version: 1`):",
    'both documented examples validate and apply unchanged. What keygate does with each part:',
    '',
    '| Metabase part | keygate |',
    '|---|---|',
    '| `version` | the same rule: a number, 1 ≤ v < 2 |',
    '| `config.users` | only `email` is read, to check `api-keys[].creator`; users are not created |',
    '| `config.settings`, `config.databases`, other sections | ignored, with an `ignored_section` warning |',
    '| `api-keys[].name`, `group`, `description`, `creator`, `key` | the same meaning; `group` may also name a custom group |',
    '| `admin` / `all-users` groups | built in, with the same file names; the API, the admin page and `keys list` call them "Administrators" and "All Users", and the file may too |',
    '| group names unique ignoring case | the same rule, in the file and in the API |',
    '| `{{env NAME}}`, `[[optional {{env NAME}}]]` | the same syntax and name matching, in keygate\'s sections; a missing variable outside `[[ ]]` is an error |',
    '| a section left empty (`api-keys:` with nothing under it) | read as absent, as in Metabase |',
    '| `MB_CONFIG_FILE_PATH` | honoured after `--config` and `KEYGATE_CONFIG` |',
    '',
    'Where keygate goes further:',
    '',
    '- **It reconciles.** Metabase only creates keys (an existing name is skipped, a removed entry stays).',
    '  keygate creates, updates and deletes config-owned keys and groups in one transaction, guarded',
    '  against mass deletion, and keeps serving the last good file when a new one is invalid.',
    "- **Metabase's `creator` is optional** in keygate, and keys need not start with `mb_`.",
    '- **Extensions** that Metabase does not know: the `keygate` and `groups` sections, and the key fields',
    '  `key_hash`, `expires_at`, `disabled` and `allow`. A file that Metabase itself also reads must',
    '  keep to the Metabase subset in `api-keys` (see [examples/metabase](../examples/metabase/)).',
    '- **Storage:** keygate keeps SHA-256 digests and looks keys up in memory; Metabase keeps bcrypt',
    '  hashes and checks one on every request. Keys whose first 7 characters collide are fine in keygate.',
    '',
    'See [migrating-from-metabase.md](migrating-from-metabase.md) for moving keys over.',
    '',
  ];
  return `${lines.join('\n').replace(/\n{3,}/g, '\n\n').trimEnd()}\n`;
}

export function readSchema(file: string = SCHEMA_FILE): Schema {
  return JSON.parse(readFileSync(file, 'utf8')) as Schema;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  writeFileSync(OUTPUT_FILE, renderConfigDocs(readSchema()));
  process.stdout.write(`wrote ${OUTPUT_FILE}\n`);
}
