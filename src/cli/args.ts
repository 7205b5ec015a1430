import { parseArgs } from 'node:util';
import { KeygateError } from '../errors.ts';

type Spec = Record<string, { type: 'string' | 'boolean'; short?: string }>;

export const COMMON: Spec = {
  config: { type: 'string', short: 'c' },
  db: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
};

export interface Parsed {
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
}

export function parse(args: string[], spec: Spec, command: string): Parsed {
  try {
    const r = parseArgs({ args, options: spec, allowPositionals: true, strict: true });
    return { values: r.values as Parsed['values'], positionals: r.positionals };
  } catch (err) {
    throw new KeygateError('KG_ERR_USAGE', `keygate ${command}: ${(err as Error).message} (see \`keygate ${command} --help\`)`);
  }
}

export const str = (v: string | boolean | undefined): string | undefined => (typeof v === 'string' ? v : undefined);
