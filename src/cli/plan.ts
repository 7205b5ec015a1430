import { planJson, renderPlan } from '../reconcile/render.ts';
import { reconcile } from '../reconcile/engine.ts';
import { displayLocation, openStore } from '../store/open.ts';
import { COMMON, parse, wantsHelp } from './args.ts';
import { databasePath, invalidJson, loadFromFlags } from './context.ts';
import type { Paint } from './colour.ts';
import { explainOpenFailure } from './database-access.ts';
import { commandHelp } from './help.ts';
import { count, json, type Io } from './io.ts';

/** The plan's lines coloured as Terraform and decK colour theirs: + green, ~ yellow, - red. */
export function colourPlan(text: string, paint: Paint): string {
  return text.replace(/^([+~=-]) .*$/gm, (line, mark: string) =>
    mark === '+' ? paint(line, 'green') : mark === '~' ? paint(line, 'yellow') : mark === '-' ? paint(line, 'red') : paint(line, 'dim'),
  );
}

export async function planCommand(args: string[], io: Io, mode: 'plan' | 'apply'): Promise<number> {
  if (wantsHelp(args)) {
    io.out(commandHelp(mode));
    return 0;
  }
  const spec = { ...COMMON, 'allow-deletes': { type: 'boolean' as const } };
  const p = parse(args, spec, mode);
  const { file, result } = loadFromFlags(p, io, 'err');
  if (!result.ok) {
    if (p.values.json === true) io.out(invalidJson(result));
    else io.err(`${mode}: ${count(result.errors.length, 'error')} in ${file}; nothing was changed\n`);
    return 1;
  }
  const desired = result.desired;
  const location = databasePath(p, io, file, desired.settings.database);
  const dbFile = displayLocation(location);
  const store = await openStore(location, mode === 'plan' ? { planOnly: true } : {}).catch((err: unknown) => {
    throw explainOpenFailure(err, location, 'write');
  });
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
      io.out(colourPlan(renderPlan(plan), io.paint.out));
      if (guard.refused) {
        const what =
          guard.moved === 0
            ? `deletes ${count(guard.deletes, 'config-owned key')}`
            : `deletes ${count(guard.deletes - guard.moved, 'config-owned key')} and moves ${count(guard.moved, 'api-owned key')} off deleted groups`;
        io.err(
          `${io.paint.err('error:', 'red')} deletion guard: this change ${what} (limit ${guard.limit}); ` +
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
