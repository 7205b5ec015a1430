/**
 * The Metabase-compatible management API, as commands the control plane runs:
 * API keys and groups. The serving side has matched the route and
 * authenticated an admin key already; this validates, writes through the
 * store in one transaction, and answers in Metabase's shapes. Keys and groups
 * declared in the config file belong to the file: changing them here is 409.
 */
import { ADMIN_GROUP, ALL_USERS_GROUP, BUILTIN_GROUPS, BUILTIN_NAME_KEYS, groupDisplayName, groupNameKey } from '../config/types.ts';
import { StoreConflictError } from '../errors.ts';
import { digestKey, displayPrefix, generateKey, maskKey, randomId } from '../keys/material.ts';
import { reassignedKeyRules } from '../reconcile/diff.ts';
import type { RouteName } from '../admin/routes.ts';
import type { GroupRow, KeyRow, Store, StoreReads } from '../store/types.ts';
import type { ApiArgs, ApiReply } from './protocol.ts';
import type { Log } from './log.ts';

export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly body: object,
    readonly headers: Record<string, string> = {},
  ) {
    super(`http ${status}`);
  }
}

const badField = (field: string, message: string): HttpError => new HttpError(400, { errors: { [field]: message } });
/** Metabase's words (permissions_group.clj, check-name-not-already-taken). */
const GROUP_NAME_TAKEN = 'A group with that name already exists.';
const notFound = (what: string): HttpError => new HttpError(404, { error: 'not_found', message: `${what} not found` });

function parseBody(text: string | null): Record<string, unknown> {
  const trimmed = (text ?? '').trim();
  if (trimmed === '') return {};
  let value: unknown;
  try {
    value = JSON.parse(trimmed);
  } catch {
    throw badField('body', 'must be a JSON object');
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw badField('body', 'must be a JSON object');
  return value as Record<string, unknown>;
}

/** A required field, or an optional one that is absent or null (Metabase: a null field is left as it is). */
function nameField(body: Record<string, unknown>, required: boolean): string | undefined {
  const v = body.name;
  if ((v === undefined || v === null) && !required) return undefined;
  if (typeof v !== 'string' || v.trim() === '') throw badField('name', 'value must be a non-blank string.');
  if (v.length > 254) throw badField('name', 'value must be at most 254 characters.');
  return v;
}

function idField(body: Record<string, unknown>, field: string, required: boolean): number | undefined {
  const v = body[field];
  if ((v === undefined || v === null) && !required) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) throw badField(field, 'value must be an integer greater than zero.');
  return v;
}

function optionalText(body: Record<string, unknown>, field: string): string | null | undefined {
  const v = body[field];
  if (v === undefined || v === null) return v as undefined | null;
  if (typeof v !== 'string') throw badField(field, 'value must be a string or null.');
  return v;
}

/** Metabase's paging of the group list: `limit` and `offset`; either one given pages (limit 50, offset 0 by default). */
function paging(query: string | undefined): { limit: number; offset: number } | null {
  const q = new URLSearchParams(query ?? '');
  const read = (field: 'limit' | 'offset'): number | null => {
    const v = q.get(field);
    if (v === null || v === '') return null;
    if (!/^\d{1,15}$/.test(v)) throw badField(field, 'value must be an integer greater than or equal to zero.');
    return Number(v);
  };
  const limit = read('limit');
  const offset = read('offset');
  if (limit === null && offset === null) return null;
  return { limit: limit ?? DEFAULT_PAGE_LIMIT, offset: offset ?? 0 };
}

/** Metabase's page size when only `offset` is given. */
const DEFAULT_PAGE_LIMIT = 50;

function parseUpdatedBy(text: string | null): { id: number | null; common_name: string } | null {
  if (text === null) return null;
  if (text === 'config') return { id: null, common_name: 'config file' };
  try {
    return JSON.parse(text) as { id: number; common_name: string };
  } catch {
    return { id: null, common_name: text };
  }
}

export interface ApiContext {
  store: Store;
  /** The config file, named in 409 answers. */
  configFile: () => string;
  now: () => Date;
  /** A key's newest use not yet written to the store (epoch ms), or null. */
  pendingUse: (keyId: number) => number | null;
  log: Log;
}

type Actor = ApiArgs['actor'];
type Result = { status: number; body: unknown; action?: string };

const encoder = new TextEncoder();

export function managementApi(ctx: ApiContext): (a: ApiArgs) => Promise<ApiReply> {
  const audit = ctx.log.child({ component: 'audit' });
  const actorText = (a: Actor): string => JSON.stringify({ id: a.id, common_name: a.name });

  function keyJson(k: KeyRow, groups: Map<number, GroupRow>): Record<string, unknown> {
    const pending = ctx.pendingUse(k.id);
    const group = groups.get(k.groupId);
    return {
      id: k.id,
      name: k.name,
      group: { id: k.groupId, name: group === undefined ? null : groupDisplayName(group) },
      group_id: k.groupId,
      masked_key: maskKey(k.prefix),
      created_at: k.createdAt,
      updated_at: k.updatedAt,
      updated_by: parseUpdatedBy(k.updatedBy),
      source: k.source,
      description: k.description,
      creator: k.creator,
      expires_at: k.expiresAt,
      disabled: k.disabled,
      last_used_at: pending !== null && (k.lastUsedAt === null || new Date(pending).toISOString() > k.lastUsedAt) ? new Date(pending).toISOString() : k.lastUsedAt,
    };
  }

  function groupJson(g: GroupRow, counts: Map<number, number>): Record<string, unknown> {
    return {
      id: g.id,
      name: groupDisplayName(g),
      member_count: counts.get(g.id) ?? 0,
      source: g.builtin ? 'builtin' : g.source,
      description: g.description,
      allow: g.allow,
      created_at: g.createdAt,
      updated_at: g.updatedAt,
    };
  }

  const groupsById = async (r: StoreReads): Promise<Map<number, GroupRow>> => new Map((await r.listGroups()).map((g) => [g.id, g]));

  function managedByConfig(kind: 'API key' | 'group', name: string): HttpError {
    const file = ctx.configFile();
    return new HttpError(409, {
      error: 'managed_by_config',
      message: `${kind} "${name}" is declared in the config file ${file}: change it there`,
      config_file: file,
    });
  }

  async function requireGroup(r: StoreReads, id: number, field = 'group_id'): Promise<GroupRow> {
    const g = await r.getGroup(id);
    if (g === null) throw badField(field, `no group with id ${id}.`);
    return g;
  }

  async function apiKey(r: StoreReads, id: number): Promise<KeyRow> {
    const k = await r.getKey(id);
    if (k === null) throw notFound(`API key ${id}`);
    return k;
  }

  /**
   * A member of a group, in the shape of Metabase's member objects: in Metabase an API key acts
   * through a user of its own ("api-key-user-…@api-key.invalid") whose first name is the key's name;
   * keygate has no users, so the key stands in for it. A key belongs to its one group only.
   */
  function memberJson(k: KeyRow): Record<string, unknown> {
    return {
      user_id: k.id,
      membership_id: k.id,
      first_name: k.name,
      last_name: '',
      common_name: k.name,
      email: `api-key-user-${k.id}@api-key.invalid`,
      is_group_manager: false,
      api_key: { id: k.id, name: k.name, masked_key: maskKey(k.prefix), source: k.source, disabled: k.disabled, expires_at: k.expiresAt },
    };
  }

  function builtinGroup(g: GroupRow): HttpError {
    // Metabase's words (permissions_group.clj, check-not-magic-group).
    return new HttpError(400, { error: 'builtin_group', message: `You cannot edit or delete the '${groupDisplayName(g)}' permissions group!` });
  }

  const isBuiltin = (g: GroupRow): boolean => g.builtin || g.name === ADMIN_GROUP || g.name === ALL_USERS_GROUP;

  /**
   * Group names are unique ignoring case (Metabase's rule); the built-in groups hold both their
   * names (`admin` and "Administrators", `all-users` and "All Users").
   */
  async function uniqueGroupName(r: StoreReads, name: string): Promise<void> {
    const key = groupNameKey(name);
    const taken = BUILTIN_NAME_KEYS.has(key) || (await r.listGroups()).some((g) => groupNameKey(g.name) === key || groupNameKey(groupDisplayName(g)) === key);
    if (taken) throw badField('name', GROUP_NAME_TAKEN);
  }

  async function uniqueName(r: StoreReads, name: string, except?: number): Promise<void> {
    const other = await r.getKeyByName(name);
    if (other !== null && other.id !== except) throw badField('name', 'An API key with this name already exists.');
  }

  const summary = (k: KeyRow, groups: Map<number, GroupRow>): object => ({ name: k.name, group: groups.get(k.groupId)?.name ?? null, masked_key: maskKey(k.prefix) });

  function record(actor: Actor, action: string, target: { id: number; name: string }, before: unknown, after: unknown): void {
    audit.info({ actor, action, target, before, after }, 'management change');
  }

  const handlers: Record<RouteName, (a: ApiArgs) => Promise<Result>> = {
    'key.list': async () => {
      const groups = await groupsById(ctx.store);
      return { status: 200, body: (await ctx.store.listKeys()).map((k) => keyJson(k, groups)) };
    },
    'key.count': async () => ({ status: 200, body: await ctx.store.countKeys() }),
    'key.create': async (a) => {
      const body = parseBody(a.body);
      const name = nameField(body, true) as string;
      const groupId = idField(body, 'group_id', true) as number;
      const description = optionalText(body, 'description') ?? null;
      const key = generateKey();
      const at = ctx.now().toISOString();
      const { row, groups } = await ctx.store.write(async (tx) => {
        await requireGroup(tx, groupId);
        await uniqueName(tx, name);
        const id = randomId();
        await tx.insertKeys([
          { id, name, digest: digestKey(key), prefix: displayPrefix(key), groupId, source: 'api', description, creator: null, expiresAt: null, disabled: false, allow: null, at, updatedBy: actorText(a.actor) },
        ]);
        return { row: (await tx.getKey(id)) as KeyRow, groups: await groupsById(tx) };
      });
      record(a.actor, 'api_key.create', { id: row.id, name }, null, summary(row, groups));
      return { status: 200, body: { ...keyJson(row, groups), unmasked_key: key }, action: 'api_key.create' };
    },
    'key.regenerate': async (a) => {
      const id = Number(a.params[0]);
      const key = generateKey();
      const at = ctx.now().toISOString();
      const { before, row, groups } = await ctx.store.write(async (tx) => {
        const k = await apiKey(tx, id);
        if (k.source === 'config') throw managedByConfig('API key', k.name);
        await tx.updateKeys([{ ...k, digest: digestKey(key), prefix: displayPrefix(key), at, updatedBy: actorText(a.actor) }]);
        return { before: k, row: (await tx.getKey(id)) as KeyRow, groups: await groupsById(tx) };
      });
      record(a.actor, 'api_key.regenerate', { id, name: before.name }, summary(before, groups), summary(row, groups));
      // Metabase answered with the whole key (name, group, created_at, …) in some versions and with
      // {id, unmasked_key, masked_key, prefix} in others: this answer carries both.
      return { status: 200, body: { ...keyJson(row, groups), unmasked_key: key, prefix: row.prefix }, action: 'api_key.regenerate' };
    },
    'key.update': async (a) => {
      const id = Number(a.params[0]);
      const at = ctx.now().toISOString();
      const result = await ctx.store.write(async (tx) => {
        const k = await apiKey(tx, id);
        const body = parseBody(a.body);
        const name = nameField(body, false);
        const groupId = idField(body, 'group_id', false);
        const description = optionalText(body, 'description');
        if (k.source === 'config') throw managedByConfig('API key', k.name);
        if (groupId !== undefined) await requireGroup(tx, groupId);
        if (name !== undefined) await uniqueName(tx, name, k.id);
        if (name === undefined && groupId === undefined && description === undefined) return { before: k, row: k, groups: await groupsById(tx), changed: false };
        await tx.updateKeys([
          { ...k, name: name ?? k.name, groupId: groupId ?? k.groupId, description: description === undefined ? k.description : description, at, updatedBy: actorText(a.actor) },
        ]);
        return { before: k, row: (await tx.getKey(id)) as KeyRow, groups: await groupsById(tx), changed: true };
      });
      if (!result.changed) return { status: 200, body: keyJson(result.row, result.groups) };
      record(a.actor, 'api_key.update', { id, name: result.row.name }, summary(result.before, result.groups), summary(result.row, result.groups));
      return { status: 200, body: keyJson(result.row, result.groups), action: 'api_key.update' };
    },
    'key.delete': async (a) => {
      const id = Number(a.params[0]);
      const { k, groups } = await ctx.store.write(async (tx) => {
        const k = await apiKey(tx, id);
        if (k.source === 'config') throw managedByConfig('API key', k.name);
        const groups = await groupsById(tx);
        await tx.deleteKeys([id]);
        return { k, groups };
      });
      record(a.actor, 'api_key.delete', { id, name: k.name }, summary(k, groups), null);
      return { status: 204, body: null, action: 'api_key.delete' };
    },
    'group.list': async (a) => {
      const page = paging(a.query);
      const counts = await ctx.store.memberCounts();
      // Metabase orders by lower-cased name (its names for the built-in groups included).
      const groups = (await ctx.store.listGroups())
        .map((g) => ({ g, key: groupNameKey(groupDisplayName(g)) }))
        .sort((x, y) => (x.key < y.key ? -1 : x.key > y.key ? 1 : x.g.id - y.g.id))
        .map((x) => x.g);
      const shown = page === null ? groups : groups.slice(page.offset, page.offset + page.limit);
      return { status: 200, body: shown.map((g) => groupJson(g, counts)) };
    },
    'group.get': async (a) => {
      const g = await ctx.store.getGroup(Number(a.params[0]));
      if (g === null) throw notFound(`group ${a.params[0]}`);
      const members = (await ctx.store.listKeys())
        .filter((k) => k.groupId === g.id)
        .sort((x, y) => (groupNameKey(x.name) < groupNameKey(y.name) ? -1 : groupNameKey(x.name) > groupNameKey(y.name) ? 1 : x.id - y.id));
      return { status: 200, body: { ...groupJson(g, new Map([[g.id, members.length]])), members: members.map(memberJson) } };
    },
    'group.update': async (a) => {
      const id = Number(a.params[0]);
      const at = ctx.now().toISOString();
      const result = await ctx.store.write(async (tx) => {
        const g = await tx.getGroup(id);
        if (g === null) throw notFound(`group ${a.params[0]}`);
        if (isBuiltin(g)) throw builtinGroup(g);
        if (g.source === 'config') throw managedByConfig('group', g.name);
        const body = parseBody(a.body);
        const name = nameField(body, true) as string;
        const description = optionalText(body, 'description');
        // As in Metabase, a new name is checked against every group, this one included.
        if (name !== g.name) await uniqueGroupName(tx, name);
        const changed = name !== g.name || (description !== undefined && description !== g.description);
        if (changed) {
          await tx.updateGroups([{ id, name, description: description === undefined ? g.description : description, allow: g.allow, source: g.source, at }]);
        }
        return { before: g, row: (await tx.getGroup(id)) as GroupRow, counts: await tx.memberCounts(), changed };
      });
      if (!result.changed) return { status: 200, body: groupJson(result.row, result.counts) };
      const view = (g: GroupRow): object => ({ name: g.name, description: g.description });
      record(a.actor, 'group.update', { id, name: result.row.name }, view(result.before), view(result.row));
      return { status: 200, body: groupJson(result.row, result.counts), action: 'group.update' };
    },
    'group.create': async (a) => {
      const body = parseBody(a.body);
      const name = nameField(body, true) as string;
      const description = optionalText(body, 'description') ?? null;
      const at = ctx.now().toISOString();
      const g = await ctx.store.write(async (tx) => {
        await uniqueGroupName(tx, name);
        const id = randomId();
        await tx.insertGroups([{ id, name, description, allow: null, source: 'api', at }]);
        return (await tx.getGroup(id)) as GroupRow;
      });
      record(a.actor, 'group.create', { id: g.id, name }, null, { name, description });
      return { status: 200, body: groupJson(g, new Map()), action: 'group.create' };
    },
    'group.delete': async (a) => {
      const id = Number(a.params[0]);
      const at = ctx.now().toISOString();
      const { g, moved } = await ctx.store.write(async (tx) => {
        const g = await tx.getGroup(id);
        if (g === null) throw notFound(`group ${a.params[0]}`);
        if (isBuiltin(g)) throw builtinGroup(g);
        if (g.source === 'config') throw managedByConfig('group', g.name);
        // Its keys move to all-users (Metabase's rule), never gaining a route by it.
        const members = (await tx.listKeys()).filter((k) => k.groupId === id);
        await tx.reassignKeys(
          members.map((k) => ({ id: k.id, groupId: BUILTIN_GROUPS[ALL_USERS_GROUP].id, ...reassignedKeyRules(k, g), at, updatedBy: actorText(a.actor) })),
        );
        await tx.deleteGroups([id]);
        return { g, moved: members.length };
      });
      record(a.actor, 'group.delete', { id, name: g.name }, { name: g.name, members: moved }, { moved_to: ALL_USERS_GROUP });
      return { status: 204, body: null, action: 'group.delete' };
    },
  };

  return async (a: ApiArgs): Promise<ApiReply> => {
    const handler = handlers[a.route as RouteName];
    if (handler === undefined) return reply(404, { error: 'not_found', message: 'no such management route' }, {}, null);
    try {
      const r = await handler(a);
      return reply(r.status, r.body, {}, r.action ?? null);
    } catch (err) {
      if (err instanceof HttpError) return reply(err.status, err.body, err.headers, null);
      if (err instanceof StoreConflictError) {
        // Another writer took the name between our check and our write.
        return reply(400, { errors: { name: err.kind === 'key' ? 'An API key with this name already exists.' : GROUP_NAME_TAKEN } }, {}, null);
      }
      throw err;
    }
  };
}

function reply(status: number, body: unknown, headers: Record<string, string>, action: string | null): ApiReply {
  return { status, headers, body: status === 204 ? null : encoder.encode(JSON.stringify(body)), action };
}
