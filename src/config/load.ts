import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { load as loadYaml, CORE_SCHEMA } from 'js-yaml';
import { LineCounter, parseDocument, type Document } from 'yaml';
import type { Diagnostic } from '../errors.ts';
import { checkSchema, entryFields, type SchemaProblem } from './schema.ts';
import { fieldHome, startsBareTemplate, unquotedTemplate, yamlDiagnostics } from './slips.ts';
import { displayPath, Positions, type DocPath } from './positions.ts';
import { EnvLookup, expandTemplate, mayHoldTemplate, type ExpandResult } from './template.ts';
import { checkSemantics } from './semantic.ts';
import type { DesiredState, RawConfig } from './types.ts';

export type LoadResult =
  | { ok: true; desired: DesiredState; warnings: Diagnostic[] }
  | { ok: false; errors: Diagnostic[]; warnings: Diagnostic[]; sha256: string | null };

/** Aliases expanded per document: far above any honest file, far below a "billion laughs". */
const MAX_ALIAS_COUNT = 100;

export interface LoadOptions {
  env?: NodeJS.ProcessEnv;
  /** Shown in messages instead of the absolute path. */
  displayName?: string;
  now?: Date;
}

/** Reads, parses, templates and checks a config file; reports every problem in one pass. */
export function loadConfigFile(file: string, opts: LoadOptions = {}): LoadResult {
  const shown = opts.displayName ?? displayName(file);
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'EIO';
    const why = code === 'ENOENT' ? 'file not found' : code === 'EACCES' ? 'permission denied' : `cannot read file (${code})`;
    return {
      ok: false,
      sha256: null,
      warnings: [],
      errors: [{ file: shown, line: 1, column: 1, path: '', code: code === 'ENOENT' ? 'file_not_found' : 'unreadable', message: why }],
    };
  }
  return loadConfigBytes(bytes, file, { ...opts, displayName: shown });
}

export function displayName(file: string): string {
  const rel = path.relative(process.cwd(), file);
  return rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel : file;
}

export function sha256Hex(bytes: Buffer | string): string {
  return createHash('sha256').update(bytes).digest('hex');
}

export function loadConfigBytes(bytes: Buffer, file: string, opts: LoadOptions = {}): LoadResult {
  const shown = opts.displayName ?? displayName(file);
  const env = opts.env ?? process.env;
  const sha256 = sha256Hex(bytes);
  const errors: Diagnostic[] = [];
  const warnings: Diagnostic[] = [];
  const fail = (): LoadResult => ({ ok: false, errors, warnings, sha256 });

  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    const at = firstInvalidUtf8(bytes);
    errors.push({ file: shown, line: at.line, column: at.column, path: '', code: 'invalid_utf8', message: 'file is not valid UTF-8' });
    return fail();
  }

  // The source-position parser (`yaml`) is slow and memory-hungry on large files, so a
  // plain, well-formed file is read with js-yaml, and `yaml` runs only when a position is
  // needed (an error or a warning) or when js-yaml cannot take the file as it is.
  const lines = new LineCounter();
  let parsed: Document.Parsed | null = null;
  const document = (): Document.Parsed => {
    parsed ??= parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true, strict: true });
    return parsed;
  };
  const positions = new Positions(document, lines);

  let raw = fastParse(text);
  if (raw === SLOW) {
    const doc = document();
    errors.push(...yamlDiagnostics(doc.errors, text, lines, shown));
    if (errors.length > 0) return fail();
    try {
      raw = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT }) as unknown;
    } catch (err) {
      const message = /alias/i.test(String(err))
        ? `too many YAML alias expansions (more than ${MAX_ALIAS_COUNT}): refusing a possible alias bomb`
        : `cannot read document: ${String((err as Error).message ?? err)}`;
      errors.push({ file: shown, line: 1, column: 1, path: '', code: 'yaml.alias_count', message });
      return fail();
    }
  }
  if (raw === null || raw === undefined) {
    errors.push({ file: shown, line: 1, column: 1, path: '', code: 'empty', message: 'file is empty: expected "version" and "config"' });
    return fail();
  }

  const diag = (p: DocPath, code: string, message: string, keyOf?: string): Diagnostic => ({
    file: shown,
    ...positions.of(p, keyOf === undefined ? {} : { keyOf }),
    path: displayPath(keyOf === undefined ? p : [...p, keyOf]),
    code,
    message,
  });

  const typed = raw as RawConfig;
  const misplaced = checkSections(typed, diag, errors, warnings);

  // Templates are expanded first, so that the schema checks the values keygate will use.
  // No message ever quotes a value, so secrets never show in them.
  const templated = new Set<string>();
  const missing = new Set<string>();
  expandAll(typed, new EnvLookup(env), templated, (p, failure) => {
    missing.add(p.join('/'));
    for (const name of failure.missing) errors.push(diag(p, 'env_missing', `environment variable "${name}" is not set`));
    for (const message of failure.ambiguous) errors.push(diag(p, 'env_ambiguous', message));
    if (failure.invalid !== null) errors.push(diag(p, 'invalid_template', `invalid template: ${failure.invalid}`));
  });
  for (const problem of checkSchema(raw)) {
    if (missing.has(problem.path.join('/'))) continue;
    // The entry that a field indented too little was taken from: its "missing field" is the same mistake.
    if (misplaced.some((m) => m.follows(problem))) continue;
    const d = diag(problem.path, problem.code, problem.message, problem.keyOf);
    if (problem.code === 'schema.type' && startsBareTemplate(text, d)) {
      errors.push({ ...d, code: 'unquoted_template', message: unquotedTemplate(text, d) });
    } else errors.push(d);
  }

  const result = checkSemantics(typed, {
    file: path.resolve(file),
    sha256,
    templated,
    now: opts.now ?? new Date(),
    error: (p, code, message) => errors.push(diag(p, code, message)),
    warn: (p, code, message) => warnings.push(diag(p, code, message)),
    structureOk: errors.length === 0,
  });
  // In file order, whichever check found them.
  errors.sort(byPosition);
  warnings.sort(byPosition);
  if (errors.length > 0 || result === null) return fail();
  return { ok: true, desired: result, warnings };
}

function byPosition(a: Diagnostic, b: Diagnostic): number {
  return a.line - b.line || a.column - b.column;
}

/** fastParse's answer when the careful parser must read the file (exported for bench/reconcile.ts). */
export const SLOW = Symbol('slow');
const ANCHOR = /(^|[\s[{,])&[^\s,[\]{}]/m;

/**
 * js-yaml's reading of a file, or SLOW when the careful parser must decide: js-yaml
 * failed (syntax, duplicate keys, several documents), or the document shares maps or
 * lists through anchors and aliases (which the careful parser expands under a limit).
 */
export function fastParse(text: string): unknown {
  let value: unknown;
  try {
    value = loadYaml(text, { schema: CORE_SCHEMA, json: false });
  } catch {
    return SLOW;
  }
  // Anchors go to the careful parser, which limits how often aliases may expand (a
  // thousand aliases of a large string are a "billion laughs" too, even unshared).
  if (ANCHOR.test(text)) return SLOW;
  if (text.includes('*')) {
    const seen = new Set<object>();
    const shared = (v: unknown): boolean => {
      if (v === null || typeof v !== 'object') return false;
      if (seen.has(v)) return true;
      seen.add(v);
      for (const child of Array.isArray(v) ? v : Object.values(v)) if (shared(child)) return true;
      return false;
    };
    if (shared(value)) return SLOW;
  }
  return value;
}

const KEYGATE_SECTIONS = new Set(['keygate', 'users', 'groups', 'api-keys']);

/** A field found among the sections of `config`, indented too little. */
interface Misplaced {
  /** True for a schema problem that the misplacement caused (the entry above lacks the field). */
  follows: (p: SchemaProblem) => boolean;
}

/**
 * Warns about Metabase's sections (keygate ignores them), and reports a field
 * of an entry or of keygate's settings found among them: indented too little.
 */
function checkSections(
  raw: RawConfig,
  diag: (p: DocPath, code: string, message: string, keyOf?: string) => Diagnostic,
  errors: Diagnostic[],
  warnings: Diagnostic[],
): Misplaced[] {
  const misplaced: Misplaced[] = [];
  if (raw === null || typeof raw !== 'object') return misplaced;
  for (const key of Object.keys(raw)) {
    if (key !== 'version' && key !== 'config') {
      warnings.push(diag([key], 'ignored_section', `top-level field "${key}" is not used by keygate and is ignored`));
    }
  }
  const cfg = raw.config;
  if (cfg === null || typeof cfg !== 'object' || Array.isArray(cfg)) return misplaced;
  const sections = Object.keys(cfg);
  sections.forEach((key, i) => {
    if (KEYGATE_SECTIONS.has(key)) return;
    const before = sections[i - 1];
    const home = fieldHome(key, before, entryFields());
    if (home === null) {
      warnings.push(diag(['config', key], 'ignored_section', `section "${key}" is Metabase's and is ignored by keygate`));
      return;
    }
    const where = home === 'keygate' ? 'a keygate setting, under keygate:' : `a field of an ${home} entry`;
    errors.push(diag(['config'], 'misplaced_field', `"${key}" is ${where}, not a section of config: check the indentation`, key));
    const list = before === home && home !== 'keygate' ? cfg[home] : undefined;
    if (!Array.isArray(list) || list.length === 0) return;
    const entry = ['config', home, list.length - 1].join('/');
    misplaced.push({
      follows: (p) =>
        p.path.slice(0, 3).join('/') === entry &&
        ((p.code === 'schema.required' && p.path.length === 4 && p.path[3] === key) ||
          (p.code === 'schema.key_or_hash' && p.path.length === 3 && (key === 'key' || key === 'key_hash'))),
    });
  });
  return misplaced;
}

/** Expands `{{env NAME}}` (and Metabase's other template forms) in the string values of keygate's sections, in place. */
function expandAll(
  raw: RawConfig,
  env: EnvLookup,
  templated: Set<string>,
  onFailure: (p: DocPath, failure: Extract<ExpandResult, { ok: false }>) => void,
): void {
  const cfg = raw?.config;
  if (cfg === null || typeof cfg !== 'object') return;
  const walk = (value: unknown, p: Array<string | number>): unknown => {
    if (typeof value === 'string') {
      if (!mayHoldTemplate(value)) return value;
      const r = expandTemplate(value, env);
      if (!r.ok) {
        templated.add(p.join('/'));
        onFailure(p, r);
        return value;
      }
      if (r.templated) templated.add(p.join('/'));
      return r.value;
    }
    if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) value[i] = walk(value[i], [...p, i]);
      return value;
    }
    if (value !== null && typeof value === 'object') {
      const obj = value as Record<string, unknown>;
      for (const k of Object.keys(obj)) obj[k] = walk(obj[k], [...p, k]);
      return obj;
    }
    return value;
  };
  for (const section of ['keygate', 'groups', 'api-keys'] as const) {
    if (section in cfg) (cfg as Record<string, unknown>)[section] = walk(cfg[section], ['config', section]);
  }
}

function firstInvalidUtf8(bytes: Buffer): { line: number; column: number } {
  let line = 1;
  let lineStart = 0;
  let i = 0;
  while (i < bytes.length) {
    const b = bytes[i] as number;
    let len = 1;
    if (b >= 0xc2 && b <= 0xdf) len = 2;
    else if (b >= 0xe0 && b <= 0xef) len = 3;
    else if (b >= 0xf0 && b <= 0xf4) len = 4;
    else if (b >= 0x80) return { line, column: i - lineStart + 1 };
    for (let k = 1; k < len; k++) {
      const c = bytes[i + k];
      if (c === undefined || (c & 0xc0) !== 0x80) return { line, column: i - lineStart + 1 };
    }
    if (b === 0x0a) {
      line++;
      lineStart = i + 1;
    }
    i += len;
  }
  return { line, column: 1 };
}
