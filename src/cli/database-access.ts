/**
 * Why a SQLite database cannot be opened, told as what to fix: which folder
 * or file this user may not write (or read), instead of a bare EACCES.
 * Asked only after opening failed, so it costs nothing when all is well.
 */
import { accessSync, constants, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { KeygateError } from '../errors.ts';
import { isPostgresUrl } from '../store/open.ts';

const WHY: Record<string, string> = {
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EROFS: 'read-only file system',
};

function denied(file: string, mode: number): string | null {
  try {
    accessSync(file, mode);
    return null;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? '';
    return WHY[code] ?? null;
  }
}

function user(): string {
  try {
    return os.userInfo().username;
  } catch {
    return `uid ${process.getuid?.() ?? '?'}`;
  }
}

const ELSEWHERE = 'or put the database elsewhere with --db, KEYGATE_DB, keygate.database or KEYGATE_DATA_DIR';

/** What keeps `location` from being opened (`write`: created or written; `read`: read), or null when nothing is found. */
export function databaseAccessProblem(location: string, mode: 'read' | 'write'): string | null {
  if (isPostgresUrl(location) || location === ':memory:') return null;
  const dir = path.dirname(location);
  const who = `this user (${user()})`;
  if (existsSync(location)) {
    const why = denied(location, mode === 'read' ? constants.R_OK : constants.R_OK | constants.W_OK);
    if (why !== null) return `cannot open the database ${location}: the file is not ${mode === 'read' ? 'readable' : 'writable'} by ${who} (${why}); change its owner or mode, ${ELSEWHERE}`;
    if (mode === 'read') return null;
    // SQLite writes its journal (-wal, -shm) beside the file.
    const dirWhy = denied(dir, constants.W_OK | constants.X_OK);
    if (dirWhy !== null) return `cannot open the database ${location}: its folder ${dir} is not writable by ${who} (${dirWhy}), and SQLite keeps its journal there; make the folder writable, ${ELSEWHERE}`;
    return null;
  }
  if (mode === 'read') return null;
  // The first folder that exists on the way up must let us create what is missing.
  let existing = dir;
  while (!existsSync(existing) && path.dirname(existing) !== existing) existing = path.dirname(existing);
  const why = denied(existing, constants.W_OK | constants.X_OK);
  if (why === null) return null;
  const what = existing === dir ? `the folder ${dir} is not writable by ${who}` : `the folder ${dir} does not exist and ${existing} is not writable by ${who}`;
  return `cannot create the database ${location}: ${what} (${why}); make it writable, ${ELSEWHERE}`;
}

/** A store's failure to open, explained where the reason is a folder or file this user may not use. */
export function explainOpenFailure(err: unknown, location: string, mode: 'read' | 'write'): unknown {
  if (!(err instanceof KeygateError) || err.code !== 'KG_ERR_DATABASE') return err;
  const why = databaseAccessProblem(location, mode);
  return why === null ? err : new KeygateError('KG_ERR_DATABASE', why, { cause: err });
}
