/**
 * Config-file helpers: write YAML inline, load it through the real loader, and
 * find diagnostics by path or code.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { loadConfigBytes, type LoadResult } from '../../src/config/load.ts';
import type { DesiredState } from '../../src/config/types.ts';
import { formatDiagnostic, type Diagnostic } from '../../src/errors.ts';

/** The name diagnostics show for configs loaded with `load()`. */
export const FILE = 'config.yml';

/**
 * YAML written indented inside a test: strips the first newline and the
 * common indentation, so that line 1 of the file is the first line written.
 */
export function yaml(strings: TemplateStringsArray, ...values: Array<string | number>): string {
  let text = strings.reduce((acc, s, i) => acc + s + (i < values.length ? String(values[i]) : ''), '');
  text = text.replace(/^\n/, '').replace(/\n[ \t]*$/, '\n');
  const lines = text.split('\n');
  const indents = lines.filter((l) => l.trim() !== '').map((l) => /^ */.exec(l)?.[0].length ?? 0);
  const cut = indents.length === 0 ? 0 : Math.min(...indents);
  return lines.map((l) => l.slice(cut)).join('\n');
}

export function sha256(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

/** A `key_hash` value for `key`. */
export function hashOf(key: string): string {
  return `sha256:${sha256(key)}`;
}

/** Loads config text through the real loader (parse, template, schema, semantics). */
export function load(text: string | Buffer, env: Record<string, string> = {}, now?: Date): LoadResult {
  const bytes = typeof text === 'string' ? Buffer.from(text, 'utf8') : text;
  return loadConfigBytes(bytes, `/keygate-tests/${FILE}`, { env, displayName: FILE, ...(now === undefined ? {} : { now }) });
}

function list(ds: readonly Diagnostic[]): string {
  return ds.length === 0 ? '(none)' : ds.map(formatDiagnostic).join('\n');
}

/** Loads text that must be valid; fails the test with the diagnostics otherwise. */
export function valid(text: string, env: Record<string, string> = {}, now?: Date): { desired: DesiredState; warnings: Diagnostic[] } {
  const r = load(text, env, now);
  if (!r.ok) assert.fail(`expected a valid config, got errors:\n${list(r.errors)}`);
  return { desired: r.desired, warnings: r.warnings };
}

/** Loads text that must be invalid; returns its errors and warnings. */
export function invalid(text: string | Buffer, env: Record<string, string> = {}): { errors: Diagnostic[]; warnings: Diagnostic[] } {
  const r = load(text, env);
  if (r.ok) assert.fail(`expected an invalid config, but it loaded (warnings:\n${list(r.warnings)})`);
  return { errors: r.errors, warnings: r.warnings };
}

/** The one diagnostic at `path`; fails the test when there is none or more than one. */
export function at(ds: readonly Diagnostic[], path: string): Diagnostic {
  const found = ds.filter((d) => d.path === path);
  if (found.length !== 1) assert.fail(`expected one diagnostic at "${path}", found ${found.length}:\n${list(ds)}`);
  return found[0] as Diagnostic;
}

/** The diagnostics with `code`. */
export function withCode(ds: readonly Diagnostic[], code: string): Diagnostic[] {
  return ds.filter((d) => d.code === code);
}

/**
 * 1-based line and column of `at` on the `occurrence`-th line of `text` that
 * contains `line`: where a diagnostic about that value must point.
 */
export function posOf(text: string, line: string, at: string = line, occurrence = 1): { line: number; column: number } {
  const lines = text.split('\n');
  let seen = 0;
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i] as string;
    if (!l.includes(line)) continue;
    seen++;
    if (seen < occurrence) continue;
    const col = l.indexOf(at, l.indexOf(line));
    assert.ok(col >= 0, `"${at}" is not on the line "${l}"`);
    return { line: i + 1, column: col + 1 };
  }
  return assert.fail(`no line ${occurrence} containing "${line}" in:\n${text}`);
}

/** Asserts that `d` is `FILE:LINE:COL: path: message` for the value `at` on the line holding `line`. */
export function assertPointsAt(d: Diagnostic, text: string, line: string, valueAt: string = line, occurrence = 1): void {
  const want = posOf(text, line, valueAt, occurrence);
  assert.deepEqual(
    { line: d.line, column: d.column },
    want,
    `${formatDiagnostic(d)} should point at line ${want.line}, column ${want.column} ("${valueAt}")`,
  );
  assert.equal(d.file, FILE);
}

export { formatDiagnostic };

/** A "billion laughs" YAML document: `levels` anchors, each a list of `width` aliases of the one before. */
export function billionLaughs(levels: number, width: number): string {
  const out = [`a: &a [${Array(width).fill('"lol"').join(', ')}]`];
  for (let i = 1; i < levels; i++) {
    const prev = String.fromCharCode(96 + i);
    const cur = String.fromCharCode(97 + i);
    out.push(`${cur}: &${cur} [${Array(width).fill(`*${prev}`).join(', ')}]`);
  }
  return out.join('\n');
}
