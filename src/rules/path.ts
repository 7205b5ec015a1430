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
 */
export type NormalizeResult =
  | { ok: true; path: string; query: string; segments: string[] }
  | { ok: false; reason: string };

const HEX = /^[0-9A-Fa-f]{2}$/;

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

/** Fast check: plain paths (the common case) need no rewriting. */
const PLAIN = /^\/(?:[A-Za-z0-9\-_~!$&'()*+,;=:@]+\/?)*$/;

export function normalizeTarget(target: string): NormalizeResult {
  if (target.length === 0 || target.charCodeAt(0) !== 0x2f /* / */) {
    return { ok: false, reason: 'request target must be an absolute path' };
  }
  const q = target.indexOf('?');
  const rawPath = q === -1 ? target : target.slice(0, q);
  const query = q === -1 ? '' : target.slice(q);
  if (PLAIN.test(rawPath) && !rawPath.includes('//')) {
    const segments = rawPath.split('/');
    segments.shift();
    if (segments.length > 0 && segments[segments.length - 1] === '') segments.pop();
    return { ok: true, path: rawPath, query, segments };
  }
  return normalizeSlow(rawPath, query);
}

function normalizeSlow(rawPath: string, query: string): NormalizeResult {
  let decoded = '';
  for (let i = 0; i < rawPath.length; i++) {
    const c = rawPath.charCodeAt(i);
    if (c < 0x21 || c === 0x7f || c > 0x7e) {
      return { ok: false, reason: 'path contains a control, space or non-ASCII character' };
    }
    if (c === 0x5c /* \ */) return { ok: false, reason: 'path contains a backslash' };
    if (c === 0x23 /* # */) return { ok: false, reason: 'path contains a fragment' };
    if (c === 0x25 /* % */) {
      const hex = rawPath.slice(i + 1, i + 3);
      if (!HEX.test(hex)) return { ok: false, reason: 'path contains a malformed percent-encoding' };
      const byte = Number.parseInt(hex, 16);
      if (byte === 0x2f || byte === 0x5c || byte === 0x00) {
        return { ok: false, reason: 'path contains an encoded slash, backslash or NUL' };
      }
      decoded += isUnreserved(byte) ? String.fromCharCode(byte) : `%${hex.toUpperCase()}`;
      i += 2;
      continue;
    }
    decoded += rawPath[i];
  }
  const trailingSlash = decoded.length > 1 && decoded.endsWith('/');
  const out: string[] = [];
  const parts = decoded.split('/');
  for (let i = 1; i < parts.length; i++) {
    const seg = parts[i] as string;
    const bare = seg.split(';', 1)[0];
    if (bare !== seg && (bare === '.' || bare === '..')) {
      // Some servers (Tomcat, Jetty) read "..;x" as "..": such a path is never matched loosely.
      return { ok: false, reason: 'path contains a dot segment with parameters' };
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
