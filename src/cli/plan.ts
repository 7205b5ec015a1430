import { planJson, renderPlan } from '../reconcile/render.ts';
import { reconcile } from '../reconcile/engine.ts';
import { displayLocation, openStore } from '../store/open.ts';
import { COMMON, parse } from './args.ts';
import { databasePath, invalidJson, loadFromFlags } from './context.ts';
import { json, type Io } from './io.ts';

export const PLAN_HELP = `Usage: keygate plan [-c FILE] [--db FILE] [--json] [--allow-deletes]

Shows what \`keygate apply\` would change: + create, ~ update, - delete,
= N unchanged. Keys are masked. Writes nothing. A plan that the deletion
guard would refuse is shown, with the refusal (exit 1); with --allow-deletes
it is shown as \`keygate apply --allow-deletes\` would apply it.
Exit 0: no changes. Exit 2: changes. Exit 1: error.
`;

export const APPLY_HELP = `Usage: keygate apply [-c FILE] [--db FILE] [--json] [--allow-deletes]

Makes the database match the config file in one transaction, then exits
(for container start-up). --allow-deletes lifts the deletion guard once.
Exit 0: applied, or nothing to do. Exit 1: error (nothing was changed).
`;

export async function planCommand(args: string[], io: Io, mode: 'plan' | 'apply'): Promise<number> {
  const spec = { ...COMMON, 'allow-deletes': { type: 'boolean' as const } };
  const p = parse(args, spec, mode);
  if (p.values.help === true) {
    io.out(mode === 'plan' ? PLAN_HELP : APPLY_HELP);
    return 0;
  }
  const { file, result } = loadFromFlags(p, io, 'err');
  if (!result.ok) {
    if (p.values.json === true) io.out(invalidJson(result));
    else io.err(`${mode}: ${result.errors.length} error(s) in ${file}; nothing was changed\n`);
    return 1;
  }
  const desired = result.desired;
  const location = databasePath(p, io, file, desired.settings.database);
  const dbFile = displayLocation(location);
  const store = await openStore(location, mode === 'plan' ? { planOnly: true } : {});
  try {
    const { plan, revision, guard } = await reconcile(store, desired, {
      apply: mode === 'apply',
      allowDeletes: p.values['allow-deletes'] === true,
    });
    if (p.values.json === true) {
      io.out(
        json({
          ...planJson(plan),
          deletion_guard: guard,
          warnings: result.warnings,
          ...(mode === 'apply'
            ? { applied: revision !== null, revision: revision?.number ?? null, database: dbFile }
            : { database: dbFile }),
        }),
      );
    } else {
      io.out(renderPlan(plan));
      if (guard.refused) {
        const what = guard.moved === 0 ? `deletes ${guard.deletes} config-owned keys` : `deletes ${guard.deletes - guard.moved} config-owned keys and moves ${guard.moved} api-owned keys off deleted groups`;
        io.err(
          `error: deletion guard: this change ${what} (limit ${guard.limit}); ` +
            '`keygate apply` will refuse it; check the file, then use `keygate apply --allow-deletes` or raise keygate.max_deletes\n',
        );
      }
      if (mode === 'apply') {
        io.out(
          revision === null
            ? `Nothing to apply: ${dbFile} already matches ${file}.\n`
            : `Applied revision ${revision.number} to ${dbFile}.\n`,
        );
      }
    }
    if (mode === 'plan') return guard.refused ? 1 : plan.changes.length === 0 ? 0 : 2;
    return 0;
  } finally {
    await store.close();
  }
}
