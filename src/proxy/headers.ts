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
  // An h2c upgrade's settings: meaningless without the upgrade, which keygate never forwards (tunnel.ts).
  'http2-settings',
  // keygate answers Expect: 100-continue itself, after authentication (server.ts); undici refuses to forward it.
  'expect',
]);

export const IDENTITY_HEADERS = ['x-api-key-id', 'x-api-key-name', 'x-api-key-group'] as const;
const REPLACED = new Set([...IDENTITY_HEADERS, 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'forwarded', 'via']);
/**
 * Never forwarded: method overrides would let a key allowed only GET make an upstream that honours
 * them DELETE; `X-Original-URL` and `X-Rewrite-URL` make some upstreams (IIS, Symfony, Laminas)
 * route on a path other than the one the rules checked.
 */
const STRIPPED = new Set(['x-http-method-override', 'x-http-method', 'x-method-override', 'x-original-url', 'x-rewrite-url']);
/**
 * A client's address as a proxy or CDN in front reports it: nginx's `X-Real-IP`, Akamai's and
 * Cloudflare's `True-Client-IP`, `CF-Connecting-IP`, Fastly's `Fastly-Client-IP`, and the older
 * `X-Client-IP` and `X-Cluster-Client-IP`. Upstreams use them for audit logs and IP allow-lists,
 * so, like other `x-forwarded-*` headers, they pass only from a trusted proxy.
 */
const CLIENT_ADDRESS = new Set(['x-real-ip', 'true-client-ip', 'cf-connecting-ip', 'fastly-client-ip', 'x-client-ip', 'x-cluster-client-ip']);

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
  /** Every `forwarded` value, joined. */
  forwarded: string | undefined;
  /**
   * Other `x-forwarded-*` headers (`-port`, `-prefix`, …) and client-address headers (`x-real-ip`, …),
   * as [name, value, …]: forwarded only for a trusted peer.
   */
  xfOther: string[] | undefined;
  hasBody: boolean;
  /** The client's headers that may go upstream, as a flat [name, value, …] list. */
  forward: string[];
}

/** Connection tokens that name no other header: the common `keep-alive`, `close` and `upgrade`. */
const PLAIN_CONNECTION = /^\s*(?:keep-alive|close|upgrade)(?:\s*,\s*(?:keep-alive|close|upgrade))*\s*$/i;

/**
 * Whether a header name that contains `_` is another spelling of the key header or of a header
 * keygate sets or strips. CGI-style servers (and PHP, WSGI, Rack) map `x_api_key_group` and
 * `x-api-key-group` to the same variable, so an upstream could read a client's underscore
 * spelling as keygate's header. nginx drops such names by default; keygate drops these.
 */
function underscoreSpelling(lower: string, keyHeader: string): boolean {
  const dashed = lower.replaceAll('_', '-');
  return dashed === keyHeader || REPLACED.has(dashed) || STRIPPED.has(dashed) || CLIENT_ADDRESS.has(dashed) || dashed.startsWith('x-forwarded-');
}

/**
 * One pass over the raw request headers: the key, `via` and forwarding headers
 * are picked out; hop-by-hop headers, the key header (unless forwarded),
 * method overrides, URL overrides, client-sent identity/forwarding headers and
 * underscore spellings of all of these are left out of `forward`.
 */
export function readRequestHead(raw: readonly string[], opts: Omit<HeaderOptions, 'via'>): RequestHead {
  const forward: string[] = [];
  let key: string | undefined;
  let via: string | undefined;
  let host: string | undefined;
  let xff: string | undefined;
  let xfp: string | undefined;
  let xfh: string | undefined;
  let forwarded: string | undefined;
  let xfOther: string[] | undefined;
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
      case 'forwarded':
        forwarded = forwarded === undefined ? value : `${forwarded}, ${value}`;
        continue;
      case 'via':
        via = via === undefined ? value : `${via}, ${value}`;
        continue;
      default:
        if (REPLACED.has(lower) || STRIPPED.has(lower) || HOP_BY_HOP.has(lower)) continue;
        if (lower.startsWith('x-forwarded-') || CLIENT_ADDRESS.has(lower)) {
          (xfOther ??= []).push(name, value);
          continue;
        }
        if (lower.includes('_') && underscoreSpelling(lower, opts.keyHeader)) continue;
    }
    forward.push(name, value);
  }
  // Headers named in Connection are hop-by-hop too (RFC 9110 §7.6.1): rare, so a second pass only then.
  if (connection !== undefined && !PLAIN_CONNECTION.test(connection)) {
    const named = new Set(connection.toLowerCase().split(',').map((t) => t.trim()));
    let j = 0;
    for (let i = 0; i < forward.length; i += 2) {
      const lower = (forward[i] as string).toLowerCase();
      if (named.has(lower) && lower !== 'connection') continue;
      forward[j++] = forward[i] as string;
      forward[j++] = forward[i + 1] as string;
    }
    forward.length = j;
  }
  return { key, via, host, hostRepeated, xff, xfp, xfh, forwarded, xfOther, hasBody, forward };
}

/** An RFC 7239 `Forwarded` parameter value: a token as it is, anything else (IPv6, host:port) quoted. */
function forwardedValue(v: string): string {
  return /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(v) ? v : `"${v.replace(/["\\]/g, '\\$&')}"`;
}

/** keygate's own `Forwarded` element for this hop: `for=<peer>;proto=<http|https>;host=<Host>`. */
export function forwardedElement(peer: string, host: string | undefined, proto: 'http' | 'https' = 'http'): string {
  const node = isIPv6(peer) ? `"[${peer}]"` : forwardedValue(peer === '' ? 'unknown' : peer);
  return host === undefined ? `for=${node};proto=${proto}` : `for=${node};proto=${proto};host=${forwardedValue(host)}`;
}

/**
 * Completes `head.forward` into the headers sent upstream: identity, `x-forwarded-*` and
 * `forwarded` (a trusted peer's values kept and appended to, anyone else's replaced) and `via`.
 */
export function upstreamHeaders(
  head: RequestHead,
  identity: readonly string[],
  peer: string,
  trusted: boolean,
  via: string,
  proto: 'http' | 'https' = 'http',
): string[] {
  const out = head.forward;
  for (let i = 0; i < identity.length; i++) out.push(identity[i] as string);
  out.push('x-forwarded-for', trusted && head.xff !== undefined ? `${head.xff}, ${peer}` : peer);
  out.push('x-forwarded-proto', trusted && head.xfp !== undefined ? head.xfp : proto);
  const fwdHost = trusted && head.xfh !== undefined ? head.xfh : head.host;
  if (fwdHost !== undefined) out.push('x-forwarded-host', fwdHost);
  if (trusted && head.xfOther !== undefined) for (let i = 0; i < head.xfOther.length; i++) out.push(head.xfOther[i] as string);
  const element = forwardedElement(peer, head.host, proto);
  out.push('forwarded', trusted && head.forwarded !== undefined ? `${head.forwarded}, ${element}` : element);
  out.push('via', head.via === undefined ? via : `${head.via}, ${via}`);
  return out;
}

/**
 * Response headers as undici parsed them (names lower-cased and interned, values strings or arrays)
 * into the flat list written to the client: hop-by-hop headers removed, and those named in
 * `Connection`; `via` appended to. One pass unless Connection names other headers.
 */
export function downstreamResponseHeaders(headers: Readonly<Record<string, string | string[] | undefined>>, via: string): string[] {
  const out: string[] = [];
  let connection: string | undefined;
  let sawVia = false;
  for (const name in headers) {
    const v = headers[name];
    if (v === undefined) continue;
    if (HOP_BY_HOP.has(name)) {
      if (name === 'connection') connection = typeof v === 'string' ? v : v.join(', ');
      continue;
    }
    if (name === 'via') {
      sawVia = true;
      out.push('via', `${typeof v === 'string' ? v : v.join(', ')}, ${via}`);
    } else if (typeof v === 'string') out.push(name, v);
    else for (let i = 0; i < v.length; i++) out.push(name, v[i] as string);
  }
  if (!sawVia) out.push('via', via);
  if (connection !== undefined && !PLAIN_CONNECTION.test(connection)) {
    const named = new Set(connection.toLowerCase().split(',').map((t) => t.trim()));
    named.delete('via');
    let j = 0;
    for (let i = 0; i < out.length; i += 2) {
      if (named.has(out[i] as string)) continue;
      out[j++] = out[i] as string;
      out[j++] = out[i + 1] as string;
    }
    out.length = j;
  }
  return out;
}
