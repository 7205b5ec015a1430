import { COMMON, parse } from './args.ts';
import { invalidJson, loadFromFlags } from './context.ts';
import type { Io } from './io.ts';

export const VALIDATE_HELP = `Usage: keygate validate [-c FILE] [--json]

Parses the config file, expands {{env NAME}} templates, checks it against the
JSON Schema and keygate's rules, and reports every problem with file, line and
column. Exit 0: valid (warnings allowed). Exit 1: invalid.
`;

export function validateCommand(args: string[], io: Io): number {
  const p = parse(args, COMMON, 'validate');
  if (p.values.help === true) {
    io.out(VALIDATE_HELP);
    return 0;
  }
  const { file, result } = loadFromFlags(p, io, 'out');
  if (p.values.json === true) {
    io.out(invalidJson(result));
  } else if (result.ok) {
    const d = result.desired;
    io.out(`${file}: valid (${d.keys.length} keys, ${d.groups.length} groups, ${result.warnings.length} warnings)\n`);
  } else {
    io.out(`${file}: invalid (${result.errors.length} errors)\n`);
  }
  return result.ok ? 0 : 1;
}
