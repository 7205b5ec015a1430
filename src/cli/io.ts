import { formatDiagnostic, type Diagnostic } from '../errors.ts';

/** Where a command writes: human output to `out`, diagnostics and logs to `err`. */
export interface Io {
  out: (text: string) => void;
  err: (text: string) => void;
  env: NodeJS.ProcessEnv;
  cwd: string;
  stdin: NodeJS.ReadableStream;
}

export function processIo(): Io {
  return {
    out: (t) => process.stdout.write(t),
    err: (t) => process.stderr.write(t),
    env: process.env,
    cwd: process.cwd(),
    stdin: process.stdin,
  };
}

export function printDiagnostics(write: (t: string) => void, errors: readonly Diagnostic[], warnings: readonly Diagnostic[]): void {
  for (const d of errors) write(`error: ${formatDiagnostic(d)}\n`);
  for (const d of warnings) write(`warning: ${formatDiagnostic(d)}\n`);
}

export function json(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}
