/**
 * The commonest YAML slips, told as what to fix: an unquoted `{{env NAME}}`
 * template, a line indented too deep or too little, a value with ": " in it,
 * tabs. And one diagnostic per mistake: a YAML parser reports a slip once
 * for every line it throws off, which says nothing more.
 */
import type { LineCounter, YAMLError } from 'yaml';
import type { Diagnostic } from '../errors.ts';

/** Where a mistake is, 1-based. */
interface At {
  line: number;
  column: number;
}

const TEMPLATE_TEXT = /^\{\{\s*env\s+[A-Za-z_][A-Za-z0-9_]*\s*\}\}/;

/**
 * What to say about a template YAML took for a map: the fix, written out for
 * the field when the line shows it (only a variable's name, never a value).
 */
export function unquotedTemplate(text: string, at: At): string {
  const l = new Source(text).line(at.line);
  const field = /([A-Za-z_][\w-]*):\s*$/.exec(l.slice(0, at.column - 1))?.[1] ?? 'key';
  const template = TEMPLATE_TEXT.exec(l.slice(at.column - 1))?.[0] ?? '{{env NAME}}';
  return `unquoted {{env NAME}} template: YAML reads "{{" as the start of a map; quote it: ${field}: "${template}"`;
}

/** A value that starts with "{{" right after "key:" or "- ": the template YAML took for a map. */
const BARE_TEMPLATE = /(?:^|[:-])\s+(\{\{)/;

class Source {
  readonly lines: string[];
  constructor(text: string) {
    this.lines = text.split(/\r?\n/);
  }

  line(n: number): string {
    return this.lines[n - 1] ?? '';
  }

  indent(n: number): number {
    return /^ */.exec(this.line(n))?.[0].length ?? 0;
  }

  blank(n: number): boolean {
    const l = this.line(n).trim();
    return l === '' || l.startsWith('#');
  }

  /** The first non-blank character of line `n`. */
  firstChar(n: number): At {
    return { line: n, column: (/^[ \t]*/.exec(this.line(n))?.[0].length ?? 0) + 1 };
  }

  /** The next line after `n` with content, or null. */
  nextContent(n: number): number | null {
    for (let i = n + 1; i <= this.lines.length; i++) if (!this.blank(i)) return i;
    return null;
  }

  /** The nearest line at or above `n` where a value opens a `quote` that the line does not close. */
  openQuote(n: number, quote: string): At | null {
    for (let i = Math.min(n, this.lines.length); i >= 1; i--) {
      const l = this.line(i);
      const m = /(?:^|[:-])\s+(["'])/.exec(l);
      if (m === null || m[1] !== quote) continue;
      const from = l.indexOf(quote, m.index);
      const rest = l.slice(from + 1).replace(quote === "'" ? /''/g : /\\./g, '');
      if (!rest.includes(quote)) return { line: i, column: from + 1 };
    }
    return null;
  }

  /** Where an unquoted template starts on line `n`, or null. */
  bareTemplate(n: number): At | null {
    const l = this.line(n);
    const m = BARE_TEMPLATE.exec(l);
    if (m === null) return null;
    return { line: n, column: l.indexOf('{{', m.index) + 1 };
  }
}

/** True when the text at `at` is the start of an unquoted `{{…}}` template. */
export function startsBareTemplate(text: string, at: At): boolean {
  const l = new Source(text).line(at.line);
  return l.startsWith('{{', at.column - 1);
}

function yamlMessage(message: string): string {
  const first = message.split('\n')[0] ?? message;
  const cleaned = first.replace(/ at line \d+, column \d+:?$/, '');
  return `YAML syntax: ${cleaned.charAt(0).toLowerCase()}${cleaned.slice(1)}`;
}

/** One YAML error as what to fix, and where. */
function explain(e: YAMLError, start: At, src: Source): { at: At; code: string; message: string } {
  // A template YAML took for a flow map shows up on its line or, unfinished, on the next.
  for (const n of [start.line, start.line - 1]) {
    const t = n >= 1 ? src.bareTemplate(n) : null;
    if (t !== null) return { at: t, code: 'yaml.unquoted_template', message: unquotedTemplate(src.lines.join('\n'), t) };
  }
  const quote = /^Missing closing (["'])quote/.exec(e.message)?.[1];
  if (quote !== undefined) {
    const open = src.openQuote(start.line, quote);
    if (open !== null) return { at: open, code: 'yaml.missing_quote', message: `YAML syntax: this value opens a ${quote} quote that is never closed: close it on this line` };
  }
  const code = `yaml.${e.code.toLowerCase()}`;
  switch (e.code) {
    case 'TAB_AS_INDENT':
      return { at: start, code, message: 'YAML syntax: a tab is used as indentation: indent with spaces' };
    case 'BLOCK_AS_IMPLICIT_KEY':
    case 'MULTILINE_IMPLICIT_KEY': {
      const rest = src.line(start.line).slice(start.column - 1);
      if (/:(\s|$)/.test(rest)) {
        return { at: start, code, message: 'YAML syntax: this value contains ": ", which YAML reads as a nested key: quote the value' };
      }
      const next = src.nextContent(start.line);
      if (next !== null && src.indent(next) > src.indent(start.line)) {
        return { at: src.firstChar(next), code: 'yaml.bad_indent', message: 'YAML syntax: this line is indented deeper than the one above it: check the indentation' };
      }
      return { at: start, code, message: yamlMessage(e.message) };
    }
    case 'BAD_INDENT':
    case 'MISSING_CHAR': {
      const at = /^\s*$/.test(src.line(start.line).slice(0, start.column - 1)) ? src.firstChar(start.line) : start;
      const what = yamlMessage(e.message);
      return { at, code, message: /indent|column|indicator/i.test(what) ? `${what}: check the indentation` : what };
    }
    default:
      return { at: start, code, message: yamlMessage(e.message) };
  }
}

/**
 * The YAML parser's errors as diagnostics: one per mistake (errors on the
 * lines a mistake threw off are left out), each with what to fix.
 */
export function yamlDiagnostics(errors: readonly YAMLError[], text: string, lines: LineCounter, file: string): Diagnostic[] {
  const src = new Source(text);
  const out: Diagnostic[] = [];
  let lastLine = -1;
  for (const e of errors) {
    const s = lines.linePos(e.pos[0]);
    const end = lines.linePos(e.pos[1]);
    const start = { line: s.line, column: s.col };
    // The same mistake again on the next line, or the rest of the one just reported.
    if (start.line <= lastLine + 1) {
      lastLine = Math.max(lastLine, end.line);
      continue;
    }
    const d = explain(e, start, src);
    lastLine = Math.max(start.line, end.line, d.at.line);
    out.push({ file, line: d.at.line, column: d.at.column, path: '', code: d.code, message: d.message });
  }
  return out;
}

/** Which section a field belongs in, for a field found (indented too little) among the sections of `config`. */
export function fieldHome(field: string, before: string | undefined, fields: { apiKey: readonly string[]; group: readonly string[]; keygate: readonly string[] }): string | null {
  const homes: string[] = [];
  if (fields.apiKey.includes(field)) homes.push('api-keys');
  if (fields.group.includes(field)) homes.push('groups');
  if (fields.keygate.includes(field)) homes.push('keygate');
  if (homes.length === 0) return null;
  return before !== undefined && homes.includes(before) ? before : (homes[0] as string);
}
