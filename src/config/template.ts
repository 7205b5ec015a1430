/**
 * Metabase's templating of config-file values, as its config-file loader
 * reads them (metabase_enterprise/advanced_config/file.clj, which parses
 * values with Metabase's SQL-parameter parser):
 *
 * - `{{env NAME}}` is the environment variable NAME, looked up as environ
 *   does: case-insensitively, with `-`, `_` and `.` alike (`{{env ci-bot-key}}`
 *   finds CI_BOT_KEY). Spaces inside the braces are allowed; several
 *   templates may share a value; a value is expanded once (not recursively).
 * - `[[ … {{env NAME}} … ]]` is optional: the whole block, text included,
 *   becomes the empty string when a variable in it is unset or empty.
 * - A value that is exactly `{{{ … }}}` is kept literally, trimmed, braces off.
 * - A `{{` only ever opens a template with its last two braces
 *   (`{{{env X}}` is `{` and the value).
 * - Anything else between `{{ }}`, a `[[ ]]` without a template, or an
 *   unclosed `{{` / `[[` is an error (as in Metabase).
 *
 * One deliberate difference: outside `[[ ]]`, an unset variable is an error
 * naming it, where Metabase silently uses the empty string.
 *
 * The values are secrets: callers never put them in a message.
 */

export type ExpandResult =
  | { ok: true; value: string; templated: boolean }
  | { ok: false; missing: string[]; ambiguous: string[]; invalid: string | null };

type Piece = { kind: 'text'; text: string } | { kind: 'env'; name: string };
type Part = Piece | { kind: 'optional'; pieces: Piece[] };

const ENV_FORM = /^\s*env\s+([A-Za-z_.\-][A-Za-z0-9_.\-]*)\s*$/;
const ESCAPED = /^\{\{\{(.+)\}\}\}$/;

/** Quick test: could this value hold a template (or a malformed one)? */
export function mayHoldTemplate(value: string): boolean {
  return value.includes('{{') || value.includes('[[');
}

/** Parses a value into text, env templates and optional blocks; a string is the problem. */
export function parseTemplate(value: string): Part[] | string {
  const parts: Part[] = [];
  let optional: Piece[] | null = null;
  let text = '';
  const flush = (): void => {
    if (text === '') return;
    (optional ?? parts).push({ kind: 'text', text });
    text = '';
  };
  let i = 0;
  while (i < value.length) {
    if (value.startsWith('{{', i) && value[i + 2] !== '{') {
      const end = value.indexOf('}}', i + 2);
      if (end < 0) return 'a "{{" has no matching "}}"';
      const inner = value.slice(i + 2, end);
      if (inner.includes('{{') || inner.includes('[[') || inner.includes(']]')) return 'a "{{" has no matching "}}"';
      if (inner.trim() === '') return '"{{ }}" cannot be empty';
      const m = ENV_FORM.exec(inner);
      if (m === null) return 'a template must be "{{env NAME}}"';
      flush();
      (optional ?? parts).push({ kind: 'env', name: m[1] as string });
      i = end + 2;
    } else if (value.startsWith('[[', i)) {
      if (optional !== null) return '"[[" blocks cannot be nested';
      flush();
      optional = [];
      i += 2;
    } else if (value.startsWith(']]', i) && optional !== null) {
      flush();
      if (!optional.some((p) => p.kind === 'env')) return 'a "[[ ]]" block must contain an "{{env NAME}}" template';
      parts.push({ kind: 'optional', pieces: optional });
      optional = null;
      i += 2;
    } else {
      text += value[i];
      i++;
    }
  }
  if (optional !== null) return 'a "[[" has no matching "]]"';
  flush();
  return parts;
}

/**
 * Looks variables up as Metabase does (environ): exact name first, then a name
 * that is the same ignoring case and `-`/`_`/`.` (or the same after Metabase's
 * kebab-casing of the template name, e.g. `{{env ciBotKey}}` → CI_BOT_KEY).
 */
export class EnvLookup {
  private index: Map<string, string[]> | null = null;

  constructor(private readonly env: NodeJS.ProcessEnv) {}

  /** The value, undefined when unset, or the problem when several different variables match. */
  get(name: string): { value: string | undefined; problem: string | null } {
    const exact = this.env[name];
    if (exact !== undefined) return { value: exact, problem: null };
    this.index ??= this.build();
    const names = new Set<string>();
    for (const k of new Set([environKey(name), kebabKey(name)])) for (const n of this.index.get(k) ?? []) names.add(n);
    const found = [...names].filter((n) => this.env[n] !== undefined);
    if (found.length === 0) return { value: undefined, problem: null };
    const values = new Set(found.map((n) => this.env[n]));
    if (values.size > 1) {
      return { value: undefined, problem: `environment variables ${found.map((n) => `"${n}"`).join(' and ')} match "{{env ${name}}}" with different values: set only one` };
    }
    return { value: this.env[found[0] as string], problem: null };
  }

  private build(): Map<string, string[]> {
    const index = new Map<string, string[]>();
    for (const n of Object.keys(this.env)) {
      const k = environKey(n);
      const list = index.get(k);
      if (list === undefined) index.set(k, [n]);
      else list.push(n);
    }
    return index;
  }
}

/** environ's keyword for a variable name: lower case, `_` and `.` read as `-`. */
function environKey(name: string): string {
  return name.toLowerCase().replace(/[_.]/g, '-');
}

type CharClass = 'upper' | 'lower' | 'number' | 'space' | 'other';

function classOf(c: string | undefined): CharClass | undefined {
  if (c === undefined) return undefined;
  if (c >= '0' && c <= '9') return 'number';
  if (c >= 'a' && c <= 'z') return 'lower';
  if (c >= 'A' && c <= 'Z') return 'upper';
  if (c === '-' || c === '_' || /\s/.test(c)) return 'space';
  return 'other';
}

/** camel-snake-kebab's ->kebab-case, which Metabase applies to the template's name. */
function kebabKey(name: string): string {
  const words: string[] = [];
  let start = 0;
  for (let i = 0; i < name.length; i++) {
    const a = classOf(name[i]);
    if (a === 'space') {
      if (i > start) words.push(name.slice(start, i));
      start = i + 1;
      continue;
    }
    const b = classOf(name[i + 1]);
    const c = classOf(name[i + 2]);
    if ((a !== 'upper' && b === 'upper') || (a !== 'number' && b === 'number') || (a === 'upper' && b === 'upper' && c === 'lower')) {
      words.push(name.slice(start, i + 1));
      start = i + 1;
    }
  }
  if (start < name.length) words.push(name.slice(start));
  return words.map((w) => w.toLowerCase()).join('-');
}

/** Expands one string value. `templated` is true when an environment value went into it. */
export function expandTemplate(value: string, env: EnvLookup | NodeJS.ProcessEnv): ExpandResult {
  const lookup = env instanceof EnvLookup ? env : new EnvLookup(env);
  const escaped = ESCAPED.exec(value);
  if (escaped !== null) return { ok: true, value: (escaped[1] as string).trim(), templated: false };
  const parts = parseTemplate(value);
  if (typeof parts === 'string') return { ok: false, missing: [], ambiguous: [], invalid: parts };
  const missing: string[] = [];
  const ambiguous: string[] = [];
  let templated = false;
  /** The value; undefined when unset (or ambiguous, which is recorded apart). */
  const resolve = (name: string): { value: string | undefined; ambiguous: boolean } => {
    const r = lookup.get(name);
    if (r.problem !== null && !ambiguous.includes(r.problem)) ambiguous.push(r.problem);
    return { value: r.value, ambiguous: r.problem !== null };
  };
  let out = '';
  for (const p of parts) {
    if (p.kind === 'text') out += p.text;
    else if (p.kind === 'env') {
      templated = true;
      const r = resolve(p.name);
      if (r.value !== undefined) out += r.value;
      else if (!r.ambiguous) missing.push(p.name);
    } else {
      templated = true;
      let block = '';
      let complete = true;
      for (const q of p.pieces) {
        const v = q.kind === 'text' ? q.text : resolve(q.name).value;
        if (v === undefined || v === '') complete = false;
        else block += v;
      }
      if (complete) out += block;
    }
  }
  if (missing.length > 0 || ambiguous.length > 0) return { ok: false, missing, ambiguous, invalid: null };
  return { ok: true, value: out, templated };
}
