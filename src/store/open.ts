/**
 * Chooses the store for a database location: a `postgres://` or
 * `postgresql://` URL is PostgreSQL (for several replicas), anything else a
 * SQLite file.
 */
import { existsSync } from 'node:fs';
import { KeygateError } from '../errors.ts';
import { openSqliteStore } from './sqlite.ts';
import type { Store } from './types.ts';

export function isPostgresUrl(location: string): boolean {
  return /^postgres(ql)?:\/\//i.test(location);
}

/** A connection-URL parameter whose value is a secret (`password`, `sslpassword`, `token`, `sslkey`, …). */
export const SECRET_URL_PARAMETER = /pass|secret|token|sslkey/i;

/** A database location as it may be shown: a URL loses its password (and any `password` parameter). */
export function displayLocation(location: string): string {
  if (!isPostgresUrl(location)) return location;
  try {
    const u = new URL(location);
    if (u.password !== '') u.password = '****';
    for (const name of [...u.searchParams.keys()]) {
      if (SECRET_URL_PARAMETER.test(name)) u.searchParams.set(name, '****');
    }
    return u.toString();
  } catch {
    return 'postgres://(unparsable URL)';
  }
}

export interface OpenStoreOptions {
  /** Read without writing anything (`keys list`); the database must exist. */
  readOnly?: boolean;
  /** Plan against an empty store when the SQLite file does not exist yet, without creating it. */
  planOnly?: boolean;
}

export async function openStore(location: string, opts: OpenStoreOptions = {}): Promise<Store> {
  if (isPostgresUrl(location)) {
    const { openPostgresStore } = await import('./postgres.ts');
    return openPostgresStore(location, opts);
  }
  if (opts.readOnly === true && !existsSync(location)) {
    throw new KeygateError('KG_ERR_DATABASE', `${location}: no database (run \`keygate apply\` first)`);
  }
  if (opts.planOnly === true && !existsSync(location)) return openSqliteStore(':memory:');
  return openSqliteStore(location, opts.readOnly === true ? { readOnly: true } : {});
}
