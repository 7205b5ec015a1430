/**
 * keygate's error classes. Each carries a stable `code`; callers match on the
 * code, never on the message text. Causes are wrapped with `{ cause }`.
 */
export type ErrorCode =
  | 'KG_ERR_CONFIG_NOT_FOUND'
  | 'KG_ERR_CONFIG_INVALID'
  | 'KG_ERR_CONFIG_UNREADABLE'
  | 'KG_ERR_DELETION_GUARD'
  | 'KG_ERR_APPLY_FAILED'
  | 'KG_ERR_DATABASE'
  | 'KG_ERR_STORE_CONFLICT'
  | 'KG_ERR_STORE_UNAVAILABLE'
  | 'KG_ERR_TLS'
  | 'KG_ERR_USAGE';

export class KeygateError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = 'KeygateError';
  }
}

/** One problem found in a config file, with its position. */
export interface Diagnostic {
  file: string;
  line: number;
  column: number;
  /** Path inside the document, as written in messages: `api-keys[2].group`. */
  path: string;
  /** Stable code of the rule that failed, e.g. `unknown_group`, `schema.required`. */
  code: string;
  message: string;
}

export function formatDiagnostic(d: Diagnostic): string {
  const where = d.path === '' ? '' : `${d.path}: `;
  return `${d.file}:${d.line}:${d.column}: ${where}${d.message}`;
}

export class ConfigInvalidError extends KeygateError {
  readonly diagnostics: readonly Diagnostic[];
  constructor(file: string, diagnostics: readonly Diagnostic[]) {
    const first = diagnostics[0];
    const summary = first === undefined ? `${file}: invalid` : formatDiagnostic(first);
    const more = diagnostics.length > 1 ? ` (and ${diagnostics.length - 1} more)` : '';
    super('KG_ERR_CONFIG_INVALID', `${summary}${more}`);
    this.name = 'ConfigInvalidError';
    this.diagnostics = diagnostics;
  }
}

export class DeletionGuardError extends KeygateError {
  readonly deletes: number;
  readonly limit: number;
  constructor(deletes: number, limit: number, configOwned: number, moved = 0) {
    const what =
      moved === 0
        ? `delete ${deletes} of ${configOwned} config-owned keys (limit ${limit})`
        : `delete ${deletes} of ${configOwned} config-owned keys and move ${moved} api-owned keys off deleted groups (${deletes + moved} in all, limit ${limit})`;
    super(
      'KG_ERR_DELETION_GUARD',
      `deletion guard: the change would ${what}; ` + 'check the file, then run `keygate apply --allow-deletes` or raise keygate.max_deletes',
    );
    this.name = 'DeletionGuardError';
    this.deletes = deletes;
    this.limit = limit;
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** A write that would give a second row the same unique name or key digest. Nothing was written. */
export class StoreConflictError extends KeygateError {
  readonly kind: 'key' | 'group';
  readonly field: 'name' | 'digest';
  constructor(kind: 'key' | 'group', field: 'name' | 'digest', options?: { cause?: unknown }) {
    super('KG_ERR_STORE_CONFLICT', `another ${kind} already has this ${field === 'digest' ? 'key' : field}`, options);
    this.name = 'StoreConflictError';
    this.kind = kind;
    this.field = field;
  }
}
