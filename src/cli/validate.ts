import { COMMON, parse, wantsHelp } from './args.ts';
import { invalidJson, loadFromFlags } from './context.ts';
import { commandHelp } from './help.ts';
import { count, type Io } from './io.ts';

export function validateCommand(args: string[], io: Io): number {
  if (wantsHelp(args)) {
    io.out(commandHelp('validate'));
    return 0;
  }
  const p = parse(args, COMMON, 'validate');
  const { file, result } = loadFromFlags(p, io, 'out');
  if (p.values.json === true) {
    io.out(invalidJson(result));
  } else if (result.ok) {
    const d = result.desired;
    io.out(`${file}: valid (${count(d.keys.length, 'key')}, ${count(d.groups.length, 'group')}, ${count(result.warnings.length, 'warning')})\n`);
  } else {
    io.out(`${file}: invalid (${count(result.errors.length, 'error')})\n`);
  }
  return result.ok ? 0 : 1;
}
