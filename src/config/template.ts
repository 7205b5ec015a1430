/**
 * Metabase's `{{env NAME}}` templating inside string values. The values are
 * secrets: callers never put them in a message.
 */
const TEMPLATE = /\{\{\s*env\s+([A-Za-z_][A-Za-z0-9_]*)\s*\}\}/g;

export type ExpandResult = { ok: true; value: string } | { ok: false; missing: string[] };

export function hasTemplate(value: string): boolean {
  TEMPLATE.lastIndex = 0;
  return TEMPLATE.test(value);
}

export function expandTemplate(value: string, env: NodeJS.ProcessEnv): ExpandResult {
  const missing: string[] = [];
  const out = value.replace(TEMPLATE, (_m, name: string) => {
    const v = env[name];
    if (v === undefined) {
      missing.push(name);
      return '';
    }
    return v;
  });
  return missing.length > 0 ? { ok: false, missing } : { ok: true, value: out };
}
