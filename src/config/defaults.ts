import type { Settings } from './types.ts';

/** Every default of keygate's settings, in one place. */
export const DEFAULT_SETTINGS: Settings = Object.freeze({
  upstream: null,
  listen: '127.0.0.1:8080',
  adminListen: '127.0.0.1:8081',
  database: null,
  keyHeader: 'x-api-key',
  forwardKey: false,
  trustedProxies: [],
  upstreamTimeoutMs: 30_000,
  failedAuthPerMinute: 60,
  maxDeletes: null,
  reloadDebounceMs: 100,
  shutdownGraceMs: 10_000,
  lastUsedFlushMs: 5_000,
  workers: 1,
  tls: null,
  adminTls: null,
});

/** Maps the file's snake_case names to Settings fields. */
const FIELD: Record<string, keyof Settings> = {
  upstream: 'upstream',
  listen: 'listen',
  admin_listen: 'adminListen',
  database: 'database',
  key_header: 'keyHeader',
  forward_key: 'forwardKey',
  trusted_proxies: 'trustedProxies',
  upstream_timeout_ms: 'upstreamTimeoutMs',
  failed_auth_per_minute: 'failedAuthPerMinute',
  max_deletes: 'maxDeletes',
  reload_debounce_ms: 'reloadDebounceMs',
  shutdown_grace_ms: 'shutdownGraceMs',
  last_used_flush_ms: 'lastUsedFlushMs',
  workers: 'workers',
  tls: 'tls',
  admin_tls: 'adminTls',
};

export function settingsFrom(section: Record<string, unknown> | undefined): Settings {
  const out: Record<string, unknown> = { ...DEFAULT_SETTINGS };
  for (const [k, v] of Object.entries(section ?? {})) {
    const field = FIELD[k];
    if (field !== undefined && v !== undefined && v !== null) out[field] = v;
  }
  if (typeof out.keyHeader === 'string') out.keyHeader = out.keyHeader.toLowerCase();
  return Object.freeze(out) as unknown as Settings;
}
