/**
 * Request-path normalisation. The proxy matches `allow` rules against the
 * normalised path and forwards that same path, so the upstream never sees a
 * path other than the one that was checked.
 *
 * - percent-encodings of unreserved characters are decoded, others upper-cased;
 * - `.` segments are dropped, `..` segments remove their parent, `//` collapse;
 * - anything that cannot be normalised safely is refused: an encoded `/`, `\`
 *   or NUL, a malformed escape, a backslash, control characters, a `..` that
 *   climbs above the root, a `..;x` segment, or a target that is not origin-form.
 *
 * The path comes from the client, so every step here is a hand-written scan
 * that looks at each character a bounded number of times: no regular
 * expression runs on it (a nested quantifier once made one request take
 * seconds per extra character), and a path longer than MAX_PATH_LENGTH is
 * refused before any work.
 */
export type NormalizeResult =
  | { ok: true; path: string; query: string; segments: string[] }
  | { ok: false; reason: string; tooLong?: true };

/** Longer paths are refused (414): they bound the work one request can ask of the normaliser and the rules. */
export const MAX_PATH_LENGTH = 8192;

/** 1 for the characters a path segment may carry as they are (RFC 3986 pchar minus `%`): unreserved, sub-delims, `:` and `@`. */
const PCHAR = new Uint8Array(128);
for (let c = 0x30; c <= 0x39; c++) PCHAR[c] = 1;
for (let c = 0x41; c <= 0x5a; c++) PCHAR[c] = 1;
for (let c = 0x61; c <= 0x7a; c++) PCHAR[c] = 1;
for (const ch of "-._~!$&'()*+,;=:@") PCHAR[ch.charCodeAt(0)] = 1;

function isUnreserved(code: number): boolean {
  return (
    (code >= 0x41 && code <= 0x5a) ||
    (code >= 0x61 && code <= 0x7a) ||
    (code >= 0x30 && code <= 0x39) ||
    code === 0x2d ||
    code === 0x2e ||
    code === 0x5f ||
    code === 0x7e
  );
}

/** The value of one hex digit, or -1. */
function hexValue(code: number): number {
  if (code >= 0x30 && code <= 0x39) return code - 0x30;
  if (code >= 0x41 && code <= 0x46) return code - 0x37;
  if (code >= 0x61 && code <= 0x66) return code - 0x57;
  return -1;
}

const HEX_UPPER = '0123456789ABCDEF';

export function normalizeTarget(target: string): NormalizeResult {
  if (target.length === 0 || target.charCodeAt(0) !== 0x2f /* / */) {
    return { ok: false, reason: 'request target must be an absolute path' };
  }
  const q = target.indexOf('?');
  const end = q === -1 ? target.length : q;
  if (end > MAX_PATH_LENGTH) return { ok: false, reason: `path is longer than ${MAX_PATH_LENGTH} characters`, tooLong: true };
  const rawPath = q === -1 ? target : target.slice(0, q);
  const query = q === -1 ? '' : target.slice(q);
  // Fast check, one pass: plain paths (the common case) need no rewriting. Plain means only
  // pchar characters, no empty segment (`//`) and no segment starting with `.` (a possible dot segment).
  let segStart = 1;
  let plain = true;
  for (let i = 1; i < end; i++) {
    const c = target.charCodeAt(i);
    if (c === 0x2f) {
      if (i === segStart) {
        plain = false;
        break;
      }
      segStart = i + 1;
    } else if (c >= 0x80 || PCHAR[c] === 0 || (c === 0x2e && i === segStart)) {
      plain = false;
      break;
    }
  }
  if (plain) {
    const segments = end === 1 ? [] : rawPath.slice(1).split('/');
    if (segments.length > 0 && segments[segments.length - 1] === '') segments.pop();
    return { ok: true, path: rawPath, query, segments };
  }
  return normalizeSlow(rawPath, query);
}

function normalizeSlow(rawPath: string, query: string): NormalizeResult {
  // Pass 1: check every character and decode escapes of unreserved characters.
  let decoded = '';
  let copyFrom = 0;
  for (let i = 0; i < rawPath.length; i++) {
    const c = rawPath.charCodeAt(i);
    if (c < 0x21 || c === 0x7f || c > 0x7e) {
      return { ok: false, reason: 'path contains a control, space or non-ASCII character' };
    }
    if (c === 0x5c /* \ */) return { ok: false, reason: 'path contains a backslash' };
    if (c === 0x23 /* # */) return { ok: false, reason: 'path contains a fragment' };
    if (c === 0x25 /* % */) {
      const hi = i + 1 < rawPath.length ? hexValue(rawPath.charCodeAt(i + 1)) : -1;
      const lo = i + 2 < rawPath.length ? hexValue(rawPath.charCodeAt(i + 2)) : -1;
      if (hi === -1 || lo === -1) return { ok: false, reason: 'path contains a malformed percent-encoding' };
      const byte = hi * 16 + lo;
      if (byte === 0x2f || byte === 0x5c || byte === 0x00) {
        return { ok: false, reason: 'path contains an encoded slash, backslash or NUL' };
      }
      decoded += rawPath.slice(copyFrom, i);
      decoded += isUnreserved(byte) ? String.fromCharCode(byte) : `%${HEX_UPPER[hi] as string}${HEX_UPPER[lo] as string}`;
      i += 2;
      copyFrom = i + 1;
    }
  }
  decoded += rawPath.slice(copyFrom);
  // Pass 2: segments, dot segments resolved.
  const trailingSlash = decoded.length > 1 && decoded.charCodeAt(decoded.length - 1) === 0x2f;
  const out: string[] = [];
  const parts = decoded.split('/');
  for (let i = 1; i < parts.length; i++) {
    const seg = parts[i] as string;
    if (seg.charCodeAt(0) === 0x2e /* . */) {
      const semi = seg.indexOf(';');
      if (semi !== -1) {
        const bare = seg.slice(0, semi);
        // Some servers (Tomcat, Jetty) read "..;x" as "..": such a path is never matched loosely.
        if (bare === '.' || bare === '..') return { ok: false, reason: 'path contains a dot segment with parameters' };
      }
    }
    if (seg === '' || seg === '.') continue;
    if (seg === '..') {
      if (out.length === 0) return { ok: false, reason: 'path climbs above the root' };
      out.pop();
      continue;
    }
    out.push(seg);
  }
  let path = `/${out.join('/')}`;
  const lastRaw = parts[parts.length - 1];
  if (out.length > 0 && (trailingSlash || lastRaw === '.' || lastRaw === '..')) path += '/';
  return { ok: true, path, query, segments: out };
}
