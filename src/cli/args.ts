import { parseArgs } from 'node:util';
import { KeygateError } from '../errors.ts';
import { closest } from '../suggest.ts';

export interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
}
export type Spec = Record<string, OptionSpec>;

export const HELP_OPTION: Spec = { help: { type: 'boolean', short: 'h' } };

export const COMMON: Spec = {
  config: { type: 'string', short: 'c' },
  db: { type: 'string' },
  json: { type: 'boolean' },
  ...HELP_OPTION,
};

/** True when the arguments ask for help (`-h` / `--help` before any `--`): it wins over every other argument. */
export function wantsHelp(args: readonly string[]): boolean {
  for (const a of args) {
    if (a === '--') return false;
    if (a === '--help' || a === '-h') return true;
  }
  return false;
}

export interface Parsed {
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
}

/** What a command takes besides its options. */
export interface Positionals {
  /** How many arguments at most (default 0). */
  max: number;
  /**
   * What to say when there are too many. Given, the extra arguments are not
   * quoted back (they may be keys); without it, the first extra one is.
   */
  tooMany?: string;
}

/** The error for a bad command line: names the command and points at its --help. */
export function usageError(command: string, problem: string): KeygateError {
  return new KeygateError('KG_ERR_USAGE', `keygate ${command}: ${problem}; see \`keygate ${command} --help\``);
}

function suggestion(word: string, candidates: readonly string[]): string {
  const hint = closest(word, candidates);
  return hint === undefined ? '' : ` (did you mean ${hint}?)`;
}

/**
 * Parses a command's arguments. Unknown options, options without their value
 * (or with one they do not take) and extra arguments are refused, each with
 * a "did you mean" where one is close.
 */
export function parse(args: readonly string[], spec: Spec, command: string, positionals: Positionals = { max: 0 }): Parsed {
  const { values, positionals: rest, tokens } = parseArgs({
    args: [...args],
    options: spec,
    allowPositionals: true,
    strict: false,
    tokens: true,
  });
  const longs = Object.keys(spec).map((n) => `--${n}`);
  const shorts = Object.values(spec).flatMap((o) => (o.short === undefined ? [] : [`-${o.short}`]));
  for (const t of tokens) {
    if (t.kind !== 'option') continue;
    const o = spec[t.name];
    if (o === undefined) {
      const known = t.rawName.startsWith('--') ? longs : [...shorts, ...longs];
      throw usageError(command, `unknown option ${t.rawName}${suggestion(t.rawName, known)}`);
    }
    if (o.type === 'boolean' && t.value !== undefined) {
      throw usageError(command, `${t.rawName} takes no value`);
    }
    // A value taken from the next argument that looks like an option was most likely forgotten.
    if (o.type === 'string' && (t.value === undefined || (t.inlineValue === false && /^-./.test(t.value)))) {
      throw usageError(command, `${t.rawName} needs a value`);
    }
  }
  if (rest.length > positionals.max) {
    const extra = rest[positionals.max] as string;
    // `keygate validate config.yml`: the file goes after -c.
    const fileHint = spec.config !== undefined && /\.ya?ml$/i.test(extra) ? ` (did you mean -c ${extra}?)` : positionals.max === 0 ? ' (it takes none)' : '';
    const what = positionals.tooMany ?? `unexpected argument ${JSON.stringify(extra)}${fileHint}`;
    throw usageError(command, what);
  }
  return { values: values as Parsed['values'], positionals: rest };
}

export const str = (v: string | boolean | undefined): string | undefined => (typeof v === 'string' ? v : undefined);
