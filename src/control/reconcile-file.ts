/**
 * One reload: read the file, check it, and reconcile it into the store. Never
 * throws for an expected failure (unreadable, invalid, refused, the store
 * unreachable): failures are values the reload machine acts on.
 */
import { readFile } from 'node:fs/promises';
import { loadConfigBytes, sha256Hex, type LoadResult } from '../config/load.ts';
import type { DesiredState } from '../config/types.ts';
import { formatDiagnostic, KeygateError } from '../errors.ts';
import { reconcile } from '../reconcile/engine.ts';
import type { Store } from '../store/types.ts';
import type { ReconcileOutcome } from './protocol.ts';

/** Error codes after which trying again, with no new edit, may succeed. */
const RETRYABLE = new Set(['unreadable', 'KG_ERR_STORE_UNAVAILABLE']);

export interface FileReconcile {
  file: string;
  env: NodeJS.ProcessEnv;
  /** Skip the work when the file's SHA-256 equals this (the applied one). */
  skipIfSha256: string | null;
  allowDeletes?: boolean;
  now?: Date;
  /** The file, read and loaded already (at start-up, where the database's location comes from it). */
  loaded?: { sha256: string; result: LoadResult };
}

export function failedOutcome(sha256: string | null, code: string, error: string, errors: string[]): Extract<ReconcileOutcome, { kind: 'failed' }> {
  return { kind: 'failed', sha256, code, error, errors, retryable: RETRYABLE.has(code) };
}

/** Reads and loads the config file; a failure to read is an outcome. */
export async function readConfig(file: string, env: NodeJS.ProcessEnv, skipIfSha256: string | null = null): Promise<{ sha256: string; result: LoadResult | null } | Extract<ReconcileOutcome, { kind: 'failed' }>> {
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'EIO';
    const missing = code === 'ENOENT';
    const why = missing ? 'file not found (deleted?)' : `cannot read file (${code})`;
    return failedOutcome(null, missing ? 'file_not_found' : 'unreadable', `${file}: ${why}`, []);
  }
  const sha256 = sha256Hex(bytes);
  // Unchanged bytes are not even parsed.
  if (skipIfSha256 !== null && sha256 === skipIfSha256) return { sha256, result: null };
  return { sha256, result: loadConfigBytes(bytes, file, { env }) };
}

export async function reconcileFile(store: Store, r: FileReconcile): Promise<{ outcome: ReconcileOutcome; desired: DesiredState | null }> {
  const read = r.loaded ?? (await readConfig(r.file, r.env, r.skipIfSha256));
  if ('kind' in read) return { outcome: read, desired: null };
  const sha256 = read.sha256;
  if (read.result === null || (r.skipIfSha256 !== null && sha256 === r.skipIfSha256)) return { outcome: { kind: 'unchanged', sha256 }, desired: null };
  const loaded = read.result;
  if (!loaded.ok) {
    const errors = loaded.errors.map(formatDiagnostic);
    const more = errors.length > 1 ? ` (and ${errors.length - 1} more)` : '';
    return { outcome: failedOutcome(sha256, 'config_invalid', `${errors[0] ?? 'invalid config'}${more}`, errors), desired: null };
  }
  try {
    const { plan, revision } = await reconcile(store, loaded.desired, { apply: true, allowDeletes: r.allowDeletes === true, now: r.now ?? new Date() });
    return {
      outcome: {
        kind: 'applied',
        sha256,
        settings: loaded.desired.settings,
        summary: plan.summary,
        changed: plan.changes.map((c) => `${c.action} ${c.kind} ${JSON.stringify(c.name)}`),
        revision: revision ?? (await store.latestRevision()),
        warnings: loaded.warnings.map(formatDiagnostic),
      },
      desired: loaded.desired,
    };
  } catch (err) {
    const code = err instanceof KeygateError ? err.code : 'KG_ERR_APPLY_FAILED';
    return { outcome: failedOutcome(sha256, code, (err as Error).message, []), desired: null };
  }
}
