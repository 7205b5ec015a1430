import type { AllowRule } from '../rules/match.ts';

/** What the user wrote (after YAML parsing), before any checks. */
export interface RawConfig {
  version?: unknown;
  config?: {
    keygate?: Record<string, unknown>;
    users?: Array<{ email?: unknown }>;
    groups?: Array<Record<string, unknown>>;
    'api-keys'?: Array<Record<string, unknown>>;
    [section: string]: unknown;
  };
}

/** keygate's settings, defaults applied. Durations carry their unit in the name. */
export interface Settings {
  upstream: string | null;
  listen: string;
  adminListen: string;
  database: string | null;
  keyHeader: string;
  forwardKey: boolean;
  trustedProxies: readonly string[];
  upstreamTimeoutMs: number;
  failedAuthPerMinute: number;
  maxDeletes: number | null;
  reloadDebounceMs: number;
  shutdownGraceMs: number;
  lastUsedFlushMs: number;
  /** Serving processes: a count, or 'auto' (one per available core). */
  workers: number | 'auto';
  /** HTTPS on both listeners: certificate and key files, as written (relative to the config file's folder). */
  tls: { cert: string; key: string } | null;
  /** The admin listener's own pair, false for plain HTTP there, null for the same as `tls`. */
  adminTls: { cert: string; key: string } | false | null;
}

export const ADMIN_GROUP = 'admin';
export const ALL_USERS_GROUP = 'all-users';
export const BUILTIN_GROUPS = {
  [ALL_USERS_GROUP]: { id: 1, description: 'All Users' },
  [ADMIN_GROUP]: { id: 2, description: 'Administrators' },
} as const;

/**
 * Metabase's names of the built-in groups, which the management API, the admin
 * page and `keys list` show. The database rows keep the config file's names
 * (`admin`, `all-users`), which the file, plans and the proxy's
 * `x-api-key-group` header use; the file accepts Metabase's names as well.
 */
export const BUILTIN_DISPLAY_NAMES: Readonly<Record<string, string>> = {
  [ALL_USERS_GROUP]: 'All Users',
  [ADMIN_GROUP]: 'Administrators',
};

/** What a group is called in API answers: Metabase's name for a built-in group, else its own. */
export function groupDisplayName(g: { name: string; builtin: boolean }): string {
  return g.builtin ? (BUILTIN_DISPLAY_NAMES[g.name] ?? g.name) : g.name;
}

/** The config-file name of the built-in group that `name` (either spelling) stands for, if any. */
export function builtinGroupFor(name: string): typeof ADMIN_GROUP | typeof ALL_USERS_GROUP | null {
  if (name === ADMIN_GROUP || name === BUILTIN_DISPLAY_NAMES[ADMIN_GROUP]) return ADMIN_GROUP;
  if (name === ALL_USERS_GROUP || name === BUILTIN_DISPLAY_NAMES[ALL_USERS_GROUP]) return ALL_USERS_GROUP;
  return null;
}

/** Group names are unique ignoring case (as in Metabase): the key they are compared by. */
export const groupNameKey = (name: string): string => name.toLowerCase();

/** Every name, compared ignoring case, that a built-in group holds: no other group may take one. */
export const BUILTIN_NAME_KEYS: ReadonlySet<string> = new Set(
  [ADMIN_GROUP, ALL_USERS_GROUP, ...Object.values(BUILTIN_DISPLAY_NAMES)].map(groupNameKey),
);

export interface DesiredGroup {
  id: number;
  name: string;
  description: string | null;
  /** null: every route. */
  allow: readonly AllowRule[] | null;
}

export interface DesiredKey {
  id: number;
  name: string;
  group: string;
  description: string | null;
  creator: string | null;
  /** Hex SHA-256 of the key. */
  digest: string;
  /** First 7 characters, or null when only the hash is known. */
  prefix: string | null;
  expiresAt: string | null;
  disabled: boolean;
  allow: readonly AllowRule[] | null;
}

/** Validated, defaults applied, secrets resolved to digests. Frozen. */
export interface DesiredState {
  file: string;
  sha256: string;
  settings: Settings;
  groups: readonly DesiredGroup[];
  keys: readonly DesiredKey[];
}
