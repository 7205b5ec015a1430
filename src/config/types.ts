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
}

export const ADMIN_GROUP = 'admin';
export const ALL_USERS_GROUP = 'all-users';
export const BUILTIN_GROUPS = {
  [ALL_USERS_GROUP]: { id: 1, description: 'All Users' },
  [ADMIN_GROUP]: { id: 2, description: 'Administrators' },
} as const;

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
