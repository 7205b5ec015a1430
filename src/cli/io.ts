import { formatDiagnostic, type Diagnostic } from '../errors.ts';
import { colourWanted, painter, type Paint } from './colour.ts';

/** Where a command writes: human output to `out`, diagnostics and logs to `err`. */
export interface Io {
  out: (text: string) => void;
  err: (text: string) => void;
  env: NodeJS.ProcessEnv;
  cwd: string;
  stdin: NodeJS.ReadableStream;
  /** Whether stdout and stderr are terminals. */
  tty: { out: boolean; err: boolean };
  /** Colour for each stream (a no-op where colour is off). */
  paint: { out: Paint; err: Paint };
}

export function processIo(): Io {
  const tty = { out: process.stdout.isTTY === true, err: process.stderr.isTTY === true };
  return {
    out: (t) => process.stdout.write(t),
    err: (t) => process.stderr.write(t),
    env: process.env,
    cwd: process.cwd(),
    stdin: process.stdin,
    tty,
    paint: { out: painter(colourWanted(process.env, tty.out)), err: painter(colourWanted(process.env, tty.err)) },
  };
}

/** "1 error", "2 errors". */
export function count(n: number, singular: string, plural = `${singular}s`): string {
  return `${n} ${n === 1 ? singular : plural}`;
}

/** Errors and warnings together, in file order (a warning before the error on a later line). */
export function printDiagnostics(write: (t: string) => void, errors: readonly Diagnostic[], warnings: readonly Diagnostic[], paint: Paint = (t) => t): void {
  const all = [
    ...errors.map((d) => ({ d, label: paint('error:', 'red') })),
    ...warnings.map((d) => ({ d, label: paint('warning:', 'yellow') })),
  ];
  // A stable sort: diagnostics at the same place keep their order, errors first.
  all.sort((a, b) => (a.d.file === b.d.file ? a.d.line - b.d.line || a.d.column - b.d.column : 0));
  for (const { d, label } of all) write(`${label} ${formatDiagnostic(d)}\n`);
}

export function json(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}
