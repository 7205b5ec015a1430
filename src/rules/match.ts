/**
 * `allow` rules: `{ methods?: [...], paths: [...] }`. In a path pattern `*`
 * matches exactly one segment and `**` any number of segments (zero or more);
 * other segments match literally (case-sensitive).
 */
export interface AllowRule {
  methods?: readonly string[];
  paths: readonly string[];
}

type Pattern = readonly string[];

export interface CompiledRule {
  /** null: every method. */
  methods: ReadonlySet<string> | null;
  patterns: readonly Pattern[];
}

/** null means "no rules declared": everything is allowed. An empty array allows nothing. */
export type CompiledRules = readonly CompiledRule[] | null;

export function patternProblem(pattern: string): string | null {
  if (!pattern.startsWith('/')) return 'must start with "/"';
  const segs = pattern.split('/').slice(1);
  for (const s of segs) {
    if (s.includes('*') && s !== '*' && s !== '**') {
      return '"*" and "**" must stand alone as a whole path segment';
    }
    if (s === '.' || s === '..') return 'must not contain "." or ".." segments';
  }
  if (/[\s?#\\]/.test(pattern)) return 'must not contain spaces, "?", "#" or "\\"';
  return null;
}

function compilePattern(pattern: string): Pattern {
  const segs = pattern.split('/').slice(1);
  if (segs.length > 0 && segs[segs.length - 1] === '') segs.pop();
  return segs;
}

export function compileRules(rules: readonly AllowRule[] | null | undefined): CompiledRules {
  if (rules === null || rules === undefined) return null;
  return rules.map((r) => ({
    methods: r.methods === undefined ? null : new Set(r.methods.map((m) => m.toUpperCase())),
    patterns: r.paths.map(compilePattern),
  }));
}

function matchSegments(p: Pattern, pi: number, s: readonly string[], si: number): boolean {
  while (pi < p.length) {
    const seg = p[pi] as string;
    if (seg === '**') {
      if (pi === p.length - 1) return true;
      for (let k = si; k <= s.length; k++) {
        if (matchSegments(p, pi + 1, s, k)) return true;
      }
      return false;
    }
    if (si >= s.length) return false;
    if (seg !== '*' && seg !== s[si]) return false;
    pi++;
    si++;
  }
  return si === s.length;
}

export function rulesAllow(rules: CompiledRules, method: string, segments: readonly string[]): boolean {
  if (rules === null) return true;
  for (const r of rules) {
    if (r.methods !== null && !r.methods.has(method)) continue;
    for (const p of r.patterns) {
      if (matchSegments(p, 0, segments, 0)) return true;
    }
  }
  return false;
}
