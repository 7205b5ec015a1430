import { readFileSync } from 'node:fs';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import type { DocPath } from './positions.ts';
import { packagePath } from '../paths.ts';
import { closest } from '../suggest.ts';

export const SCHEMA_PATH = packagePath('schemas', 'config.schema.json');

export function schemaText(): string {
  return readFileSync(SCHEMA_PATH, 'utf8');
}

let compiled: ValidateFunction | undefined;
let fields: { apiKey: string[]; group: string[]; keygate: string[] } | undefined;

/** The fields of an api-keys entry, of a groups entry, and keygate's settings, as the schema names them. */
export function entryFields(): { apiKey: string[]; group: string[]; keygate: string[] } {
  if (fields === undefined) {
    const defs = (JSON.parse(schemaText()) as { definitions: Record<string, { properties?: object }> }).definitions;
    const names = (d: string): string[] => Object.keys(defs[d]?.properties ?? {});
    fields = { apiKey: names('apiKey'), group: names('group'), keygate: names('keygate') };
  }
  return fields;
}

function validator(): ValidateFunction {
  if (compiled === undefined) {
    const ajv = new Ajv({ allErrors: true, strict: false, verbose: true });
    compiled = ajv.compile(JSON.parse(schemaText()) as object);
  }
  return compiled;
}

/** A schema problem, before positions are attached. */
export interface SchemaProblem {
  path: DocPath;
  /** When set, the problem is about this key of the map at `path` (its position is used). */
  keyOf?: string;
  code: string;
  message: string;
}

const FIELD_HINTS: Record<string, string> = {
  key: 'must be 12-254 characters with no whitespace or control characters, or an "{{env NAME}}" template',
  key_hash: 'must be "sha256:" followed by the 64 lowercase hex digits of the key\'s SHA-256',
  expires_at: 'must be an RFC 3339 time, e.g. 2027-06-30T00:00:00Z',
  listen: 'must be HOST:PORT, e.g. 127.0.0.1:8080',
  admin_listen: 'must be HOST:PORT, e.g. 127.0.0.1:8081',
  upstream: 'must be an http:// or https:// URL, e.g. http://127.0.0.1:3000',
  key_header: 'must be a valid HTTP header name',
  paths: 'must start with "/"',
};

function pointerToPath(pointer: string): Array<string | number> {
  if (pointer === '') return [];
  return pointer
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((s) => (/^\d+$/.test(s) ? Number(s) : s));
}

function lastField(p: DocPath): string | undefined {
  for (let i = p.length - 1; i >= 0; i--) {
    const s = p[i];
    if (typeof s === 'string') return s;
  }
  return undefined;
}

function describe(e: ErrorObject, data: unknown): SchemaProblem | null {
  const path = pointerToPath(e.instancePath);
  const field = lastField(path);
  const p = e.params as Record<string, unknown>;
  switch (e.keyword) {
    case 'required':
      return {
        path: [...path, String(p.missingProperty)],
        code: 'schema.required',
        message: `missing required field "${String(p.missingProperty)}"`,
      };
    case 'additionalProperties': {
      const extra = String(p.additionalProperty);
      const known = Object.keys((e.parentSchema as { properties?: object } | undefined)?.properties ?? {});
      const hint = closest(extra, known);
      return {
        path,
        keyOf: extra,
        code: 'schema.unknown_field',
        message: `unknown field "${extra}"${hint === undefined ? '' : ` (did you mean "${hint}"?)`}`,
      };
    }
    case 'type':
      return { path, code: 'schema.type', message: `must be ${String(p.type).split(',').map(article).join(' or ')}` };
    case 'enum':
      return {
        path,
        code: 'schema.enum',
        message: `must be one of ${((p.allowedValues as unknown[]) ?? []).join(', ')}`,
      };
    case 'pattern':
    case 'anyOf':
      return {
        path,
        code: 'schema.format',
        message: (field !== undefined ? FIELD_HINTS[field] : undefined) ?? `must match ${String(p.pattern ?? 'the schema')}`,
      };
    case 'minLength':
      return { path, code: 'schema.min_length', message: `must be at least ${String(p.limit)} characters` };
    case 'maxLength':
      return { path, code: 'schema.max_length', message: `must be at most ${String(p.limit)} characters` };
    case 'minItems':
      return { path, code: 'schema.min_items', message: `must list at least ${String(p.limit)} item(s)` };
    case 'minimum':
    case 'exclusiveMaximum':
    case 'maximum':
    case 'exclusiveMinimum':
      if (path.length === 1 && path[0] === 'version') {
        return { path, code: 'schema.version', message: 'must be a number from 1 up to (not including) 2' };
      }
      return { path, code: `schema.${e.keyword}`, message: `must be ${comparison(e.keyword)} ${String(p.limit)}` };
    case 'oneOf': {
      const entry = valueAt(data, path);
      const both = typeof entry === 'object' && entry !== null && 'key' in entry && 'key_hash' in entry;
      return {
        path,
        code: 'schema.key_or_hash',
        message: `exactly one of "key" or "key_hash" is required (found ${both ? 'both' : 'neither'})`,
      };
    }
    default:
      return { path, code: `schema.${e.keyword}`, message: e.message ?? 'is invalid' };
  }
}

function comparison(keyword: string): string {
  return { minimum: '>=', maximum: '<=', exclusiveMinimum: '>', exclusiveMaximum: '<' }[keyword] ?? keyword;
}

function article(type: string): string {
  return /^[aeiou]/.test(type) ? `an ${type}` : `a ${type}`;
}

function valueAt(data: unknown, path: DocPath): unknown {
  let v: unknown = data;
  for (const seg of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string | number, unknown>)[seg];
  }
  return v;
}

/** All schema problems of a document, one per field, with readable messages. */
export function checkSchema(data: unknown): SchemaProblem[] {
  const validate = validator();
  if (validate(data)) return [];
  const errors = validate.errors ?? [];
  // Collapse the branch errors of anyOf/oneOf into the one message of their parent.
  const parents = errors.filter((e) => e.keyword === 'anyOf' || e.keyword === 'oneOf');
  const kept = errors.filter((e) => {
    if (e.keyword === 'anyOf' || e.keyword === 'oneOf') return true;
    return !parents.some(
      (p) => e.schemaPath.startsWith(`${p.schemaPath}/`) && e.instancePath === p.instancePath,
    );
  });
  const out: SchemaProblem[] = [];
  const seen = new Set<string>();
  for (const e of kept) {
    const problem = describe(e, data);
    if (problem === null) continue;
    const id = `${problem.path.join('/')}|${problem.keyOf ?? ''}|${problem.message}`;
    if (seen.has(id)) continue;
    seen.add(id);
    out.push(problem);
  }
  return out;
}
