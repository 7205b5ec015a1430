/**
 * The Metabase-compatible management API on the admin listener: API keys and
 * groups, callable with an admin-group key in the key header. Keys and groups
 * declared in the config file belong to the file: changing them here is 409.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { ADMIN_GROUP, ALL_USERS_GROUP } from '../config/types.ts';
import { digestKey, displayPrefix, generateKey, maskKey, randomId } from '../keys/material.ts';
import { authenticate } from '../proxy/auth.ts';
import { FailedAuthThrottle } from '../proxy/throttle.ts';
import type { Principal } from '../proxy/snapshot.ts';
import { errorMessage } from '../proxy/respond.ts';
import {
  deleteApiKey,
  deleteGroupMovingKeys,
  getGroup,
  getGroupByName,
  getKey,
  getKeyByName,
  insertApiGroup,
  insertApiKey,
  memberCounts,
  updateApiKey,
  type Actor,
} from '../store/mutations.ts';
import { readGroups, readKeys, type GroupRow, type KeyRow } from '../store/state.ts';
import type { Daemon } from '../daemon/daemon.ts';
import { sendJson, type ApiHandler } from './server.ts';

const MAX_BODY_BYTES = 64 * 1024;

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly body: object,
    readonly headers: Record<string, string> = {},
  ) {
    super(`http ${status}`);
  }
}

const badField = (field: string, message: string): HttpError => new HttpError(400, { errors: { [field]: message } });
const notFound = (what: string): HttpError => new HttpError(404, { error: 'not_found', message: `${what} not found` });

async function readBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > MAX_BODY_BYTES) throw new HttpError(413, { error: 'payload_too_large', message: `body over ${MAX_BODY_BYTES} bytes` });
    chunks.push(c as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8').trim();
  if (text === '') return {};
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw badField('body', 'must be a JSON object');
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw badField('body', 'must be a JSON object');
  return value as Record<string, unknown>;
}

function nameField(body: Record<string, unknown>, required: boolean): string | undefined {
  const v = body.name;
  if (v === undefined && !required) return undefined;
  if (typeof v !== 'string' || v.trim() === '') throw badField('name', 'value must be a non-blank string.');
  if (v.length > 254) throw badField('name', 'value must be at most 254 characters.');
  return v;
}

function idField(body: Record<string, unknown>, field: string, required: boolean): number | undefined {
  const v = body[field];
  if (v === undefined && !required) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) throw badField(field, 'value must be an integer greater than zero.');
  return v;
}

function optionalText(body: Record<string, unknown>, field: string): string | null | undefined {
  const v = body[field];
  if (v === undefined || v === null) return v as undefined | null;
  if (typeof v !== 'string') throw badField(field, 'value must be a string or null.');
  return v;
}

function parseUpdatedBy(text: string | null): { id: number | null; common_name: string } | null {
  if (text === null) return null;
  if (text === 'config') return { id: null, common_name: 'config file' };
  try {
    return JSON.parse(text) as { id: number; common_name: string };
  } catch {
    return { id: null, common_name: text };
  }
}

export function managementApi(daemon: Daemon): ApiHandler {
  const log: Logger = daemon.logger.child({ component: 'audit' });
  const db = () => daemon.db;
  const keyHeader = () => daemon.settings.keyHeader;

  const groupRef = (groups: Map<number, GroupRow>, id: number) => ({ id, name: groups.get(id)?.name ?? null });

  function keyJson(k: KeyRow, groups: Map<number, GroupRow>): Record<string, unknown> {
    const pending = daemon.lastUsed.pendingAt(k.id);
    return {
      id: k.id,
      name: k.name,
      group: groupRef(groups, k.groupId),
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
      last_used_at: pending !== null ? new Date(pending).toISOString() : k.lastUsedAt,
    };
  }

  function groupJson(g: GroupRow, counts: Map<number, number>): Record<string, unknown> {
    return {
      id: g.id,
      name: g.name,
      member_count: counts.get(g.id) ?? 0,
      source: g.builtin ? 'builtin' : g.source,
      description: g.description,
      allow: g.allow,
      created_at: g.createdAt,
      updated_at: g.updatedAt,
    };
  }

  const groupsById = (): Map<number, GroupRow> => new Map(readGroups(db()).map((g) => [g.id, g]));

  function managedByConfig(kind: 'API key' | 'group', name: string): HttpError {
    return new HttpError(409, {
      error: 'managed_by_config',
      message: `${kind} "${name}" is declared in the config file ${daemon.configFile}: change it there`,
      config_file: daemon.configFile,
    });
  }

  // Failed authentications are throttled per address here too, as on the proxy.
  const throttle = new FailedAuthThrottle(daemon.settings.failedAuthPerMinute);

  function caller(req: IncomingMessage): Principal {
    const now = Date.now();
    const peer = req.socket.remoteAddress ?? '';
    const wait = throttle.retryAfterSeconds(peer, now);
    if (wait > 0) {
      daemon.metrics.authFailure('throttled');
      throw new HttpError(429, { error: 'too_many_requests', message: errorMessage('too_many_requests', keyHeader()) }, { 'retry-after': String(wait) });
    }
    const raw = req.headers[keyHeader()];
    const auth = authenticate(daemon.currentSnapshot(), Array.isArray(raw) ? raw.join(', ') : raw, now);
    if (!auth.ok) {
      throttle.fail(peer, now);
      const code = auth.reason === 'missing' ? 'missing_api_key' : auth.reason === 'duplicate' ? 'duplicate_api_key' : 'invalid_api_key';
      daemon.metrics.authFailure(auth.reason);
      throw new HttpError(auth.reason === 'duplicate' ? 400 : 401, { error: code, message: errorMessage(code, keyHeader()) });
    }
    if (!auth.principal.admin) {
      throw new HttpError(403, { error: 'forbidden', message: 'The management API needs a key of the admin group.' });
    }
    return auth.principal;
  }

  function audit(actor: Actor, action: string, target: { id: number; name: string }, before: unknown, after: unknown): void {
    daemon.metrics.managementChanges.labels(action).inc();
    log.info({ actor, action, target, before, after }, 'management change');
  }

  /** After a write: the proxy sees it from the next request on. */
  function changed(): void {
    daemon.noteApiWrite();
  }

  function requireGroup(id: number, field = 'group_id'): GroupRow {
    const g = getGroup(db(), id);
    if (g === null) throw badField(field, `no group with id ${id}.`);
    return g;
  }

  function apiKey(id: number): KeyRow {
    const k = getKey(db(), id);
    if (k === null) throw notFound(`API key ${id}`);
    return k;
  }

  function uniqueName(name: string, except?: number): void {
    const other = getKeyByName(db(), name);
    if (other !== null && other.id !== except) throw badField('name', 'An API key with this name already exists.');
  }

  function summary(k: KeyRow, groups: Map<number, GroupRow>): object {
    return { name: k.name, group: groups.get(k.groupId)?.name ?? null, masked_key: maskKey(k.prefix) };
  }

  type Route = { method: string; pattern: RegExp; run: (req: IncomingMessage, actor: Actor, m: RegExpExecArray) => Promise<[number, unknown]> | [number, unknown] };

  const routes: Route[] = [
    {
      method: 'GET',
      pattern: /^\/api\/api-key\/?$/,
      run: () => {
        const groups = groupsById();
        return [200, readKeys(db()).map((k) => keyJson(k, groups))];
      },
    },
    {
      method: 'GET',
      pattern: /^\/api\/api-key\/count\/?$/,
      run: () => [200, (db().prepare('SELECT count(*) FROM api_keys').pluck().get() as number)],
    },
    {
      method: 'POST',
      pattern: /^\/api\/api-key\/?$/,
      run: async (req, actor) => {
        const body = await readBody(req);
        const name = nameField(body, true) as string;
        const groupId = idField(body, 'group_id', true) as number;
        const description = optionalText(body, 'description') ?? null;
        requireGroup(groupId);
        uniqueName(name);
        const key = generateKey();
        const row = insertApiKey(
          db(),
          { id: randomId(), name, digest: digestKey(key), prefix: displayPrefix(key), groupId, description, expiresAt: null },
          actor,
        );
        changed();
        const groups = groupsById();
        audit(actor, 'api_key.create', { id: row.id, name }, null, summary(row, groups));
        return [200, { ...keyJson(row, groups), unmasked_key: key }];
      },
    },
    {
      method: 'PUT',
      pattern: /^\/api\/api-key\/(\d+)\/regenerate\/?$/,
      run: (_req, actor, m) => {
        const k = apiKey(Number(m[1]));
        if (k.source === 'config') throw managedByConfig('API key', k.name);
        const key = generateKey();
        const row = updateApiKey(db(), k.id, { digest: digestKey(key), prefix: displayPrefix(key) }, actor);
        changed();
        const groups = groupsById();
        audit(actor, 'api_key.regenerate', { id: k.id, name: k.name }, summary(k, groups), summary(row, groups));
        return [200, { id: row.id, unmasked_key: key, masked_key: maskKey(row.prefix), prefix: row.prefix }];
      },
    },
    {
      method: 'PUT',
      pattern: /^\/api\/api-key\/(\d+)\/?$/,
      run: async (req, actor, m) => {
        const k = apiKey(Number(m[1]));
        const body = await readBody(req);
        const name = nameField(body, false);
        const groupId = idField(body, 'group_id', false);
        const description = optionalText(body, 'description');
        if (k.source === 'config') throw managedByConfig('API key', k.name);
        if (groupId !== undefined) requireGroup(groupId);
        if (name !== undefined) uniqueName(name, k.id);
        const groups0 = groupsById();
        if (name === undefined && groupId === undefined && description === undefined) return [200, keyJson(k, groups0)];
        const row = updateApiKey(
          db(),
          k.id,
          {
            ...(name !== undefined ? { name } : {}),
            ...(groupId !== undefined ? { groupId } : {}),
            ...(description !== undefined ? { description } : {}),
          },
          actor,
        );
        changed();
        const groups = groupsById();
        audit(actor, 'api_key.update', { id: k.id, name: row.name }, summary(k, groups), summary(row, groups));
        return [200, keyJson(row, groups)];
      },
    },
    {
      method: 'DELETE',
      pattern: /^\/api\/api-key\/(\d+)\/?$/,
      run: (_req, actor, m) => {
        const k = apiKey(Number(m[1]));
        if (k.source === 'config') throw managedByConfig('API key', k.name);
        deleteApiKey(db(), k.id);
        changed();
        audit(actor, 'api_key.delete', { id: k.id, name: k.name }, summary(k, groupsById()), null);
        return [204, null];
      },
    },
    {
      method: 'GET',
      pattern: /^\/api\/permissions\/group\/?$/,
      run: () => {
        const counts = memberCounts(db());
        return [200, readGroups(db()).map((g) => groupJson(g, counts))];
      },
    },
    {
      method: 'GET',
      pattern: /^\/api\/permissions\/group\/(\d+)\/?$/,
      run: (_req, _actor, m) => {
        const g = getGroup(db(), Number(m[1]));
        if (g === null) throw notFound(`group ${m[1]}`);
        return [200, groupJson(g, memberCounts(db()))];
      },
    },
    {
      method: 'POST',
      pattern: /^\/api\/permissions\/group\/?$/,
      run: async (req, actor) => {
        const body = await readBody(req);
        const name = nameField(body, true) as string;
        const description = optionalText(body, 'description') ?? null;
        if (getGroupByName(db(), name) !== null) throw badField('name', 'A group with this name already exists.');
        const g = insertApiGroup(db(), { id: randomId(), name, description });
        changed();
        audit(actor, 'group.create', { id: g.id, name }, null, { name, description });
        return [200, groupJson(g, new Map())];
      },
    },
    {
      method: 'DELETE',
      pattern: /^\/api\/permissions\/group\/(\d+)\/?$/,
      run: (_req, actor, m) => {
        const g = getGroup(db(), Number(m[1]));
        if (g === null) throw notFound(`group ${m[1]}`);
        if (g.builtin || g.name === ADMIN_GROUP || g.name === ALL_USERS_GROUP) {
          throw new HttpError(400, { error: 'builtin_group', message: `group "${g.name}" is built in and cannot be deleted` });
        }
        if (g.source === 'config') throw managedByConfig('group', g.name);
        const moved = deleteGroupMovingKeys(db(), g.id, actor);
        changed();
        audit(actor, 'group.delete', { id: g.id, name: g.name }, { name: g.name, members: moved }, { moved_to: ALL_USERS_GROUP });
        return [204, null];
      },
    },
  ];

  return async (req: IncomingMessage, res: ServerResponse, url: URL): Promise<boolean> => {
    const path = url.pathname;
    const matching = routes.filter((r) => r.pattern.test(path));
    if (matching.length === 0) return false;
    try {
      const p = caller(req);
      const route = matching.find((r) => r.method === req.method);
      if (route === undefined) {
        const allow = [...new Set(matching.map((r) => r.method))].join(', ');
        throw new HttpError(405, { error: 'method_not_allowed', message: `use ${allow}` }, { allow });
      }
      const [status, body] = await route.run(req, { id: p.id, name: p.name }, route.pattern.exec(path) as RegExpExecArray);
      if (status === 204) {
        res.writeHead(204);
        res.end();
      } else if (typeof body === 'number') {
        const text = String(body);
        res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
        res.end(text);
      } else sendJson(res, status, body);
    } catch (err) {
      if (err instanceof HttpError) {
        const extra: Record<string, string> = { ...err.headers };
        if (err.status === 401) extra['www-authenticate'] = `ApiKey realm="keygate", header="${keyHeader()}"`;
        sendJson(res, err.status, err.body, extra);
        req.resume();
      } else throw err;
    }
    return true;
  };
}
