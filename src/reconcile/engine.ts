import type { DesiredState } from '../config/types.ts';
import { DeletionGuardError } from '../errors.ts';
import type { DB } from '../store/db.ts';
import { readActual, type RevisionRow } from '../store/state.ts';
import { applyPlan } from './apply.ts';
import { deletionLimit, diff, type Plan } from './diff.ts';

export interface ReconcileOptions {
  /** false: plan only, write nothing. */
  apply: boolean;
  /** Lift the deletion guard for this run. */
  allowDeletes?: boolean;
  now?: Date;
}

export interface GuardVerdict {
  /** Config-owned keys the change deletes. */
  deletes: number;
  limit: number;
  refused: boolean;
}

export interface ReconcileResult {
  plan: Plan;
  revision: RevisionRow | null;
  guard: GuardVerdict;
}

/**
 * Plan and apply run the same engine; only apply writes. A plan that the
 * deletion guard would refuse is still returned by a plan (so that a reviewer
 * sees it), and refused by an apply.
 */
export function reconcile(db: DB, desired: DesiredState, opts: ReconcileOptions): ReconcileResult {
  const planChecked = (): { plan: Plan; guard: GuardVerdict } => {
    const plan = diff(desired, readActual(db));
    const limit = deletionLimit(plan.summary.configKeys, desired.settings.maxDeletes);
    const refused = opts.allowDeletes !== true && plan.summary.keysDeleted > limit;
    return { plan, guard: { deletes: plan.summary.keysDeleted, limit, refused } };
  };
  if (!opts.apply) return { ...planChecked(), revision: null };
  // Read, diff and write under one write lock, so that two appliers never interleave.
  return db
    .transaction((): ReconcileResult => {
      const { plan, guard } = planChecked();
      if (guard.refused) throw new DeletionGuardError(guard.deletes, guard.limit, plan.summary.configKeys);
      return { plan, guard, revision: applyPlan(db, desired, plan, opts.now) };
    })
    .immediate();
}
