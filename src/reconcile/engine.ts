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

export interface ReconcileResult {
  plan: Plan;
  revision: RevisionRow | null;
}

/** Plan and apply run the same engine; only apply writes. */
export function reconcile(db: DB, desired: DesiredState, opts: ReconcileOptions): ReconcileResult {
  const planChecked = (): Plan => {
    const plan = diff(desired, readActual(db));
    const limit = deletionLimit(plan.summary.configKeys, desired.settings.maxDeletes);
    if (opts.allowDeletes !== true && plan.summary.keysDeleted > limit) {
      throw new DeletionGuardError(plan.summary.keysDeleted, limit, plan.summary.configKeys);
    }
    return plan;
  };
  if (!opts.apply) return { plan: planChecked(), revision: null };
  // Read, diff and write under one write lock, so that two appliers never interleave.
  return db
    .transaction((): ReconcileResult => {
      const plan = planChecked();
      return { plan, revision: applyPlan(db, desired, plan, opts.now) };
    })
    .immediate();
}
