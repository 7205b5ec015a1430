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

/**
 * Whether `s` matches pattern `p`, in O(|p| × |s|) steps at worst, whatever the
 * path and however many `**` the pattern has. The classic wildcard scan: `**`
 * (any run of segments) is first tried empty, and on a mismatch only the most
 * recent `**` is widened by one segment. Earlier ones never need revisiting:
 * whatever they could absorb, the later `**` can absorb too. (The recursive
 * form tried every split for every `**`: O(|s|^k) with k of them.)
 */
function matchSegments(p: Pattern, s: readonly string[]): boolean {
  let pi = 0;
  let si = 0;
  let starAt = -1;
  let starFrom = 0;
  while (si < s.length) {
    const seg = pi < p.length ? (p[pi] as string) : null;
    if (seg === '**') {
      starAt = pi++;
      starFrom = si;
    } else if (seg !== null && (seg === '*' || seg === s[si])) {
      pi++;
      si++;
    } else if (starAt !== -1) {
      pi = starAt + 1;
      si = ++starFrom;
    } else {
      return false;
    }
  }
  while (pi < p.length && p[pi] === '**') pi++;
  return pi === p.length;
}

export function rulesAllow(rules: CompiledRules, method: string, segments: readonly string[]): boolean {
  if (rules === null) return true;
  for (const r of rules) {
    if (r.methods !== null && !r.methods.has(method)) continue;
    for (const p of r.patterns) {
      if (matchSegments(p, segments)) return true;
    }
  }
  return false;
}
