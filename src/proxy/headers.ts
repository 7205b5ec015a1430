import { BlockList, isIPv6 } from 'node:net';

/** Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded in either direction. */
export const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

export const IDENTITY_HEADERS = ['x-api-key-id', 'x-api-key-name', 'x-api-key-group'] as const;
const REPLACED = new Set([...IDENTITY_HEADERS, 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'via']);
/** Method overrides would let a key allowed only GET make an upstream that honours them DELETE. */
const METHOD_OVERRIDES = new Set(['x-http-method-override', 'x-http-method', 'x-method-override']);

/** Header-safe text: a key name with characters HTTP cannot carry is percent-encoded. */
export function headerSafe(value: string): string {
  return /^[\x20-\x7e]*$/.test(value) ? value : encodeURIComponent(value);
}

export function trustedProxyList(entries: readonly string[]): BlockList | null {
  if (entries.length === 0) return null;
  const list = new BlockList();
  for (const e of entries) {
    const [addr, bits] = e.split('/') as [string, string | undefined];
    const type = isIPv6(addr) ? 'ipv6' : 'ipv4';
    if (bits === undefined) list.addAddress(addr, type);
    else list.addSubnet(addr, Number(bits), type);
  }
  return list;
}

export function isTrusted(list: BlockList | null, address: string): boolean {
  if (list === null || address === '') return false;
  const v4 = address.startsWith('::ffff:') ? address.slice(7) : address;
  return list.check(v4, isIPv6(v4) ? 'ipv6' : 'ipv4');
}

export interface ForwardIdentity {
  id: number;
  name: string;
  group: string;
}

/** The identity headers of a key, as a flat [name, value, …] list: built once per snapshot, not per request. */
export function identityHeaders(who: ForwardIdentity): readonly string[] {
  return Object.freeze(['x-api-key-id', String(who.id), 'x-api-key-name', headerSafe(who.name), 'x-api-key-group', headerSafe(who.group)]);
}

export interface HeaderOptions {
  keyHeader: string;
  forwardKey: boolean;
  via: string;
  /** Keep hop-by-hop `connection`/`upgrade` (for tunnelled upgrades). */
  upgrade: boolean;
}

/**
 * What the proxy needs from a request's headers, read in one pass over
 * `rawHeaders` (Node's `req.headers` object is never built on the request path).
 */
export interface RequestHead {
  /** The key header; every copy, joined with ", " when it was sent more than once. */
  key: string | undefined;
  /** Every `via` value, joined. */
  via: string | undefined;
  host: string | undefined;
  /** More than one Host header: RFC 9112 §3.2 says answer 400, since the upstream might route on either. */
  hostRepeated: boolean;
  xff: string | undefined;
  xfp: string | undefined;
  xfh: string | undefined;
  hasBody: boolean;
  /** The client's headers that may go upstream, as a flat [name, value, …] list. */
  forward: string[];
}

/** Connection tokens that name no other header: the common `keep-alive`, `close` and `upgrade`. */
const PLAIN_CONNECTION = /^\s*(?:keep-alive|close|upgrade)(?:\s*,\s*(?:keep-alive|close|upgrade))*\s*$/i;

/**
 * One pass over the raw request headers: the key, `via` and forwarding headers
 * are picked out; hop-by-hop headers, the key header (unless forwarded),
 * method overrides and client-sent identity/forwarding headers are left out of
 * `forward`.
 */
export function readRequestHead(raw: readonly string[], opts: Omit<HeaderOptions, 'via'>): RequestHead {
  const forward: string[] = [];
  let key: string | undefined;
  let via: string | undefined;
  let host: string | undefined;
  let xff: string | undefined;
  let xfp: string | undefined;
  let xfh: string | undefined;
  let connection: string | undefined;
  let hasBody = false;
  let hostRepeated = false;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    const value = raw[i + 1] as string;
    const lower = name.toLowerCase();
    if (lower === opts.keyHeader) {
      key = key === undefined ? value : `${key}, ${value}`;
      if (!opts.forwardKey) continue;
    }
    switch (lower) {
      case 'host':
        if (host === undefined) host = value;
        else hostRepeated = true;
        break;
      case 'content-length':
        if (value !== '0') hasBody = true;
        break;
      case 'transfer-encoding':
        hasBody = true;
        continue;
      case 'connection':
        connection = connection === undefined ? value : `${connection}, ${value}`;
        if (opts.upgrade) break;
        continue;
      case 'upgrade':
        if (opts.upgrade) break;
        continue;
      case 'x-forwarded-for':
        xff = xff === undefined ? value : `${xff}, ${value}`;
        continue;
      case 'x-forwarded-proto':
        xfp ??= value;
        continue;
      case 'x-forwarded-host':
        xfh ??= value;
        continue;
      case 'via':
        via = via === undefined ? value : `${via}, ${value}`;
        continue;
      default:
        if (REPLACED.has(lower) || METHOD_OVERRIDES.has(lower) || HOP_BY_HOP.has(lower)) continue;
    }
    forward.push(name, value);
  }
  // Headers named in Connection are hop-by-hop too (RFC 9110 §7.6.1): rare, so a second pass only then.
  if (connection !== undefined && !PLAIN_CONNECTION.test(connection)) {
    const named = new Set(connection.toLowerCase().split(',').map((t) => t.trim()));
    if (opts.upgrade) named.delete('upgrade');
    let j = 0;
    for (let i = 0; i < forward.length; i += 2) {
      const lower = (forward[i] as string).toLowerCase();
      if (named.has(lower) && lower !== 'connection') continue;
      forward[j++] = forward[i] as string;
      forward[j++] = forward[i + 1] as string;
    }
    forward.length = j;
  }
  return { key, via, host, hostRepeated, xff, xfp, xfh, hasBody, forward };
}

/** Completes `head.forward` into the headers sent upstream: identity, `x-forwarded-*` (appended to for trusted peers) and `via`. */
export function upstreamHeaders(head: RequestHead, identity: readonly string[], peer: string, trusted: boolean, via: string): string[] {
  const out = head.forward;
  for (let i = 0; i < identity.length; i++) out.push(identity[i] as string);
  out.push('x-forwarded-for', trusted && head.xff !== undefined ? `${head.xff}, ${peer}` : peer);
  out.push('x-forwarded-proto', trusted && head.xfp !== undefined ? head.xfp : 'http');
  const fwdHost = trusted && head.xfh !== undefined ? head.xfh : head.host;
  if (fwdHost !== undefined) out.push('x-forwarded-host', fwdHost);
  out.push('via', head.via === undefined ? via : `${head.via}, ${via}`);
  return out;
}

/** Response headers from undici's raw list, hop-by-hop removed, `via` added; one pass unless Connection names other headers. */
export function downstreamResponseHeaders(raw: readonly Buffer[], via: string): string[] {
  const out: string[] = [];
  let connection: string | undefined;
  let viaAt = -1;
  for (let i = 0; i < raw.length; i += 2) {
    const name = (raw[i] as Buffer).toString('latin1');
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower)) {
      if (lower === 'connection') {
        const v = (raw[i + 1] as Buffer).toString('latin1');
        connection = connection === undefined ? v : `${connection}, ${v}`;
      }
      continue;
    }
    if (lower === 'via') viaAt = out.length;
    out.push(name, (raw[i + 1] as Buffer).toString('latin1'));
  }
  if (viaAt === -1) out.push('via', via);
  else out[viaAt + 1] = `${out[viaAt + 1] as string}, ${via}`;
  if (connection !== undefined && !PLAIN_CONNECTION.test(connection)) {
    const named = new Set(connection.toLowerCase().split(',').map((t) => t.trim()));
    named.delete('via');
    let j = 0;
    for (let i = 0; i < out.length; i += 2) {
      if (named.has((out[i] as string).toLowerCase())) continue;
      out[j++] = out[i] as string;
      out[j++] = out[i + 1] as string;
    }
    out.length = j;
  }
  return out;
}
