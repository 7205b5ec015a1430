/**
 * Runs the real CLI (`node bin/keygate.js …`) as a child process and collects
 * what a user would see: stdout, stderr and the exit code.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const REPO = fileURLToPath(new URL('../../', import.meta.url));
export const BIN = fileURLToPath(new URL('../../bin/keygate.js', import.meta.url));

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  /** Extra environment variables; the child gets only these plus PATH, HOME and TMPDIR. */
  env?: Record<string, string>;
  cwd?: string;
  /** Written to stdin; stdin is closed either way. */
  input?: string;
  timeoutMs?: number;
}

/** A small, predictable environment: nothing of the test runner's leaks into the child. */
function childEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { LANG: 'C.UTF-8' };
  for (const name of ['PATH', 'HOME', 'TMPDIR', 'SystemRoot']) {
    const v = process.env[name];
    if (v !== undefined) env[name] = v;
  }
  return { ...env, ...extra };
}

export function runCli(args: readonly string[], opts: CliOptions = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd: opts.cwd ?? REPO,
      env: childEnv(opts.env ?? {}),
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') });
    });
    child.stdin.on('error', () => {});
    child.stdin.end(opts.input ?? '');
  });
}

/** Parses stdout as JSON, failing the test with the output when it is not. */
export function parseJson(r: CliResult): unknown {
  try {
    return JSON.parse(r.stdout) as unknown;
  } catch {
    throw new Error(`stdout is not JSON (exit ${String(r.code)}):\n${r.stdout}\nstderr:\n${r.stderr}`);
  }
}

/** Everything the run printed, for messages in failed assertions. */
export function shown(r: CliResult): string {
  return `exit ${String(r.code)}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;
}
