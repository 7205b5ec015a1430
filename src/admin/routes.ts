/**
 * The management API's routes, shared by the serving side (which matches a
 * request, authenticates it and hands it over) and the control plane (which
 * runs it). Shapes follow Metabase's API keys and permissions-group API.
 */
export type RouteName =
  | 'key.list'
  | 'key.count'
  | 'key.create'
  | 'key.regenerate'
  | 'key.update'
  | 'key.delete'
  | 'group.list'
  | 'group.get'
  | 'group.create'
  | 'group.update'
  | 'group.delete';

interface Route {
  method: string;
  pattern: RegExp;
  name: RouteName;
  /** Takes a JSON body. */
  body: boolean;
}

export const ROUTES: readonly Route[] = [
  { method: 'GET', pattern: /^\/api\/api-key\/?$/, name: 'key.list', body: false },
  { method: 'POST', pattern: /^\/api\/api-key\/?$/, name: 'key.create', body: true },
  { method: 'GET', pattern: /^\/api\/api-key\/count\/?$/, name: 'key.count', body: false },
  { method: 'PUT', pattern: /^\/api\/api-key\/(\d{1,16})\/regenerate\/?$/, name: 'key.regenerate', body: false },
  { method: 'PUT', pattern: /^\/api\/api-key\/(\d{1,16})\/?$/, name: 'key.update', body: true },
  { method: 'DELETE', pattern: /^\/api\/api-key\/(\d{1,16})\/?$/, name: 'key.delete', body: false },
  { method: 'GET', pattern: /^\/api\/permissions\/group\/?$/, name: 'group.list', body: false },
  { method: 'POST', pattern: /^\/api\/permissions\/group\/?$/, name: 'group.create', body: true },
  { method: 'GET', pattern: /^\/api\/permissions\/group\/(\d{1,16})\/?$/, name: 'group.get', body: false },
  { method: 'PUT', pattern: /^\/api\/permissions\/group\/(\d{1,16})\/?$/, name: 'group.update', body: true },
  { method: 'DELETE', pattern: /^\/api\/permissions\/group\/(\d{1,16})\/?$/, name: 'group.delete', body: false },
];

export type RouteMatch =
  | { kind: 'route'; name: RouteName; params: string[]; body: boolean }
  | { kind: 'method_not_allowed'; allow: string[] }
  | { kind: 'none' };

export function matchRoute(method: string, path: string): RouteMatch {
  const allow: string[] = [];
  for (const r of ROUTES) {
    const m = r.pattern.exec(path);
    if (m === null) continue;
    if (r.method === method) return { kind: 'route', name: r.name, params: m.slice(1), body: r.body };
    if (!allow.includes(r.method)) allow.push(r.method);
  }
  return allow.length === 0 ? { kind: 'none' } : { kind: 'method_not_allowed', allow };
}
