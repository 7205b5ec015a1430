/**
 * One reload: read the file, check it, and reconcile it into the store. Never
 * throws for an expected failure (unreadable, invalid, refused, the store
 * unreachable): failures are values the reload machine acts on.
 */
import { readFile } from 'node:fs/promises';
import { loadConfigBytes, sha256Hex } from '../config/load.ts';
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
}

export function failedOutcome(sha256: string | null, code: string, error: string, errors: string[]): Extract<ReconcileOutcome, { kind: 'failed' }> {
  return { kind: 'failed', sha256, code, error, errors, retryable: RETRYABLE.has(code) };
}

export async function reconcileFile(store: Store, r: FileReconcile): Promise<{ outcome: ReconcileOutcome; desired: DesiredState | null }> {
  let bytes: Buffer;
  try {
    bytes = await readFile(r.file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'EIO';
    const missing = code === 'ENOENT';
    const why = missing ? 'file not found (deleted?)' : `cannot read file (${code})`;
    return { outcome: failedOutcome(null, missing ? 'file_not_found' : 'unreadable', `${r.file}: ${why}`, []), desired: null };
  }
  const sha256 = sha256Hex(bytes);
  if (r.skipIfSha256 !== null && sha256 === r.skipIfSha256) return { outcome: { kind: 'unchanged', sha256 }, desired: null };
  const loaded = loadConfigBytes(bytes, r.file, { env: r.env });
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
