import { derivedId, digestKey, displayPrefix } from '../keys/material.ts';
import { patternProblem, type AllowRule } from '../rules/match.ts';
import { settingsFrom } from './defaults.ts';
import type { DocPath } from './positions.ts';
import {
  ADMIN_GROUP,
  ALL_USERS_GROUP,
  BUILTIN_DISPLAY_NAMES,
  BUILTIN_GROUPS,
  BUILTIN_NAME_KEYS,
  builtinGroupFor,
  groupNameKey,
  type DesiredGroup,
  type DesiredKey,
  type DesiredState,
  type RawConfig,
} from './types.ts';

/** Keys shorter than this are accepted with a warning. */
export const WEAK_KEY_LENGTH = 20;
const KEY_RULE = /^[^\s\u0000-\u001f\u007f]{12,254}$/;
const HASH_RULE = /^sha256:[0-9a-f]{64}$/;
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;

type Report = (p: DocPath, code: string, message: string) => void;

export interface SemanticContext {
  file: string;
  sha256: string;
  /** Paths (joined with "/") whose value came from an env template: never quoted in messages. */
  templated: ReadonlySet<string>;
  now: Date;
  error: Report;
  warn: Report;
  /** False when the schema already found problems: build nothing, only report. */
  structureOk: boolean;
}

const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

export function parseRfc3339(value: string): Date | null {
  const m = RFC3339.exec(value);
  if (m === null) return null;
  const [, y, mo, d, h, mi, s] = m.map(Number) as number[];
  if (mo! < 1 || mo! > 12 || d! < 1 || d! > 31 || h! > 23 || mi! > 59 || s! > 60) return null;
  const probe = new Date(Date.UTC(y!, mo! - 1, d!));
  if (probe.getUTCMonth() !== mo! - 1) return null;
  const t = Date.parse(value.replace(' ', 'T'));
  return Number.isNaN(t) ? null : new Date(t);
}

/** Checks what the schema cannot express; returns the desired state when all is well. */
export function checkSemantics(raw: RawConfig, ctx: SemanticContext): DesiredState | null {
  const cfg = isObj(raw?.config) ? raw.config : {};
  const quote = (p: DocPath, value: string): string =>
    ctx.templated.has(p.join('/')) ? '(value from an environment template)' : JSON.stringify(value);
  let ok = ctx.structureOk;
  const error: Report = (p, code, message) => {
    ok = false;
    ctx.error(p, code, message);
  };

  // users: the creators that api-keys may name.
  const users = Array.isArray(cfg.users) ? cfg.users : null;
  const emails = new Set<string>();
  for (const u of users ?? []) {
    const e = isObj(u) ? str(u.email) : undefined;
    if (e !== undefined) emails.add(e.toLowerCase());
  }

  // groups
  const groups: DesiredGroup[] = [];
  /** Declared groups by name ignoring case (the built-in all-users under its config name). */
  const groupNames = new Map<string, { index: number; name: string }>();
  const rawGroups = Array.isArray(cfg.groups) ? cfg.groups : [];
  let allUsers: DesiredGroup = { id: BUILTIN_GROUPS[ALL_USERS_GROUP].id, name: ALL_USERS_GROUP, description: BUILTIN_GROUPS[ALL_USERS_GROUP].description, allow: null };
  rawGroups.forEach((g, i) => {
    const p: DocPath = ['config', 'groups', i];
    if (!isObj(g)) return;
    const written = str(g.name);
    if (written === undefined) return;
    const builtin = builtinGroupFor(written);
    const key = groupNameKey(written);
    if (builtin === ADMIN_GROUP || key === groupNameKey(ADMIN_GROUP) || key === groupNameKey(BUILTIN_DISPLAY_NAMES[ADMIN_GROUP] as string)) {
      error([...p, 'name'], 'reserved_group', `group ${quote([...p, 'name'], written)} is built in and reserved: it always allows everything`);
      return;
    }
    if (builtin === null && BUILTIN_NAME_KEYS.has(key)) {
      error(
        [...p, 'name'],
        'reserved_group',
        `group ${quote([...p, 'name'], written)} differs only in case from a built-in group's name (group names are unique ignoring case): write "${ALL_USERS_GROUP}" or "${BUILTIN_DISPLAY_NAMES[ALL_USERS_GROUP]}" to set the built-in group's rules`,
      );
      return;
    }
    // `All Users` is Metabase's name of the built-in `all-users`: one group, either spelling.
    const name = builtin ?? written;
    const first = groupNames.get(builtin === null ? key : ALL_USERS_GROUP);
    if (first !== undefined) {
      const why = builtin === null ? 'group names are unique ignoring case' : 'the same built-in group';
      const same = first.name === written ? '' : ` as ${quote(['config', 'groups', first.index, 'name'], first.name)}, ${why}`;
      error([...p, 'name'], 'duplicate_group', `duplicate group name ${quote([...p, 'name'], written)} (first declared at groups[${first.index}]${same})`);
      return;
    }
    groupNames.set(builtin === null ? key : ALL_USERS_GROUP, { index: i, name: written });
    const allow = checkAllow(g.allow, [...p, 'allow'], error, quote);
    const group: DesiredGroup = {
      id: name === ALL_USERS_GROUP ? BUILTIN_GROUPS[ALL_USERS_GROUP].id : derivedId('group', name),
      name,
      description: str(g.description) ?? (name === ALL_USERS_GROUP ? BUILTIN_GROUPS[ALL_USERS_GROUP].description : null),
      allow,
    };
    if (name === ALL_USERS_GROUP) allUsers = group;
    else groups.push(group);
  });
  const admin: DesiredGroup = { id: BUILTIN_GROUPS[ADMIN_GROUP].id, name: ADMIN_GROUP, description: BUILTIN_GROUPS[ADMIN_GROUP].description, allow: null };
  const known = [ADMIN_GROUP, ALL_USERS_GROUP, ...groups.map((g) => g.name)];
  const knownSet = new Set(known);
  /** For a "did you mean": declared names by their key, quoted as safely as where they were written. */
  const knownByKey = new Map<string, string>([
    [groupNameKey(ADMIN_GROUP), JSON.stringify(ADMIN_GROUP)],
    [groupNameKey(ALL_USERS_GROUP), JSON.stringify(ALL_USERS_GROUP)],
  ]);
  for (const [key, first] of groupNames) if (key !== ALL_USERS_GROUP) knownByKey.set(key, quote(['config', 'groups', first.index, 'name'], first.name));

  // api-keys
  const keys: DesiredKey[] = [];
  const keyNames = new Map<string, number>();
  const digests = new Map<string, number>();
  const rawKeys = Array.isArray(cfg['api-keys']) ? cfg['api-keys'] : [];
  rawKeys.forEach((k, i) => {
    const p: DocPath = ['config', 'api-keys', i];
    if (!isObj(k)) return;
    const name = str(k.name);
    if (name !== undefined) {
      const first = keyNames.get(name);
      if (first !== undefined) {
        error([...p, 'name'], 'duplicate_name', `duplicate key name ${quote([...p, 'name'], name)} (first declared at api-keys[${first}])`);
      } else keyNames.set(name, i);
    }
    const written = str(k.group);
    // Metabase's names of the built-in groups ("Administrators", "All Users") are accepted too.
    const group = written === undefined ? undefined : (builtinGroupFor(written) ?? written);
    if (written !== undefined && group !== undefined && !knownSet.has(group)) {
      const close = knownByKey.get(groupNameKey(written));
      const hint = close === undefined ? '' : `: did you mean ${close}? a reference must spell the name as declared`;
      error([...p, 'group'], 'unknown_group', `unknown group ${quote([...p, 'group'], written)} (declared: ${known.join(', ')})${hint}`);
    }
    const creator = str(k.creator);
    if (creator !== undefined && users !== null && !emails.has(creator.toLowerCase())) {
      error([...p, 'creator'], 'unknown_creator', `creator ${quote([...p, 'creator'], creator)} is not one of users[].email`);
    }
    let digest: string | undefined;
    let prefix: string | null = null;
    const key = str(k.key);
    const keyHash = str(k.key_hash);
    if (key !== undefined && keyHash === undefined) {
      if (KEY_RULE.test(key)) {
        digest = digestKey(key);
        prefix = displayPrefix(key);
        if (key.length < WEAK_KEY_LENGTH) {
          ctx.warn([...p, 'key'], 'weak_key', `key is shorter than ${WEAK_KEY_LENGTH} characters: weak, generate one with \`keygate keys generate\``);
        }
      }
    } else if (keyHash !== undefined && key === undefined) {
      if (HASH_RULE.test(keyHash)) digest = keyHash.slice('sha256:'.length);
    }
    if (digest !== undefined) {
      const first = digests.get(digest);
      if (first !== undefined) {
        error([...p, key !== undefined ? 'key' : 'key_hash'], 'duplicate_key', `same key as api-keys[${first}]: every entry needs its own key`);
      } else digests.set(digest, i);
    }
    let expiresAt: string | null = null;
    const exp = str(k.expires_at);
    if (exp !== undefined) {
      const at = parseRfc3339(exp);
      if (at === null) {
        if (RFC3339.test(exp)) error([...p, 'expires_at'], 'invalid_time', `${quote([...p, 'expires_at'], exp)} is not a real date and time`);
      } else {
        expiresAt = at.toISOString();
        if (at.getTime() <= ctx.now.getTime()) {
          ctx.warn([...p, 'expires_at'], 'expired', 'this key has already expired: it will be refused');
        }
      }
    }
    const allow = checkAllow(k.allow, [...p, 'allow'], error, quote);
    if (name !== undefined && group !== undefined && digest !== undefined) {
      keys.push({
        id: derivedId('key', name),
        name,
        group,
        description: str(k.description) ?? null,
        creator: creator ?? null,
        digest,
        prefix,
        expiresAt,
        disabled: k.disabled === true,
        allow,
      });
    }
  });

  if (!ok) return null;
  return deepFreeze({
    file: ctx.file,
    sha256: ctx.sha256,
    settings: settingsFrom(isObj(cfg.keygate) ? cfg.keygate : undefined),
    groups: [allUsers, admin, ...groups],
    keys,
  });
}

function checkAllow(value: unknown, p: DocPath, error: Report, quote: (p: DocPath, v: string) => string): AllowRule[] | null {
  if (!Array.isArray(value)) return null;
  const rules: AllowRule[] = [];
  value.forEach((r, i) => {
    if (!isObj(r) || !Array.isArray(r.paths)) return;
    const paths: string[] = [];
    r.paths.forEach((pat, j) => {
      if (typeof pat !== 'string') return;
      const problem = patternProblem(pat);
      // A pattern without a leading "/" was already reported by the schema.
      if (problem !== null && pat.startsWith('/')) {
        error([...p, i, 'paths', j], 'invalid_pattern', `path pattern ${quote([...p, i, 'paths', j], pat)} ${problem}`);
      }
      paths.push(pat);
    });
    const rule: AllowRule = Array.isArray(r.methods)
      ? { methods: r.methods.filter((m): m is string => typeof m === 'string'), paths }
      : { paths };
    rules.push(rule);
  });
  return rules;
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}
