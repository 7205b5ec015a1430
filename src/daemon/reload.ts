/**
 * One reload: read the file, check it, reconcile it into the database, and
 * read back what the proxy needs. Runs in the reload worker (and inline for
 * the first apply at start-up). Never throws: failures are values.
 */
import { readFileSync } from 'node:fs';
import { loadConfigBytes, sha256Hex } from '../config/load.ts';
import type { Settings } from '../config/types.ts';
import { formatDiagnostic, KeygateError, type Diagnostic } from '../errors.ts';
import { reconcile } from '../reconcile/engine.ts';
import type { PlanSummary } from '../reconcile/diff.ts';
import type { DB } from '../store/db.ts';
import { latestRevision, readStoreState, type RevisionRow, type StoreState } from '../store/state.ts';

export type ReloadOutcome =
  | { kind: 'unchanged'; sha256: string }
  | {
      kind: 'applied';
      sha256: string;
      settings: Settings;
      summary: PlanSummary;
      changed: string[];
      revision: RevisionRow | null;
      state: StoreState;
      warnings: string[];
    }
  | { kind: 'failed'; sha256: string | null; code: string; error: string; errors: string[] };

export interface ReloadRequest {
  file: string;
  /** Skip the work when the file's SHA-256 equals this (the applied one). */
  skipIfSha256: string | null;
  env: NodeJS.ProcessEnv;
}

export function runReload(db: DB, req: ReloadRequest): ReloadOutcome {
  let bytes: Buffer;
  try {
    bytes = readFileSync(req.file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'EIO';
    const why = code === 'ENOENT' ? 'file not found (deleted?)' : `cannot read file (${code})`;
    return { kind: 'failed', sha256: null, code: code === 'ENOENT' ? 'file_not_found' : 'unreadable', error: `${req.file}: ${why}`, errors: [] };
  }
  const sha256 = sha256Hex(bytes);
  if (req.skipIfSha256 !== null && sha256 === req.skipIfSha256) return { kind: 'unchanged', sha256 };
  const loaded = loadConfigBytes(bytes, req.file, { env: req.env });
  if (!loaded.ok) {
    const errors = loaded.errors.map(formatDiagnostic);
    const more = errors.length > 1 ? ` (and ${errors.length - 1} more)` : '';
    return { kind: 'failed', sha256, code: 'config_invalid', error: `${errors[0] ?? 'invalid config'}${more}`, errors };
  }
  try {
    const { plan, revision } = reconcile(db, loaded.desired, { apply: true });
    return {
      kind: 'applied',
      sha256,
      settings: loaded.desired.settings,
      summary: plan.summary,
      changed: plan.changes.map((c) => `${c.action} ${c.kind} ${JSON.stringify(c.name)}`),
      revision: revision ?? latestRevision(db),
      state: readStoreState(db),
      warnings: loaded.warnings.map((w: Diagnostic) => formatDiagnostic(w)),
    };
  } catch (err) {
    const code = err instanceof KeygateError ? err.code : 'KG_ERR_APPLY_FAILED';
    return { kind: 'failed', sha256, code, error: (err as Error).message, errors: [] };
  }
}
