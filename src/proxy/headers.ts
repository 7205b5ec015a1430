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
 * The request headers sent upstream, as a flat [name, value, …] list: hop-by-hop
 * headers and the key header removed, client-sent identity and forwarding
 * headers replaced (appended to for trusted peers).
 */
export function upstreamRequestHeaders(
  raw: readonly string[],
  identity: readonly string[],
  peer: string,
  trusted: boolean,
  opts: HeaderOptions,
): string[] {
  const out: string[] = [];
  let connectionTokens: Set<string> | null = null;
  for (let i = 0; i < raw.length; i += 2) {
    if ((raw[i] as string).length === 10 && (raw[i] as string).toLowerCase() === 'connection') {
      connectionTokens = new Set((raw[i + 1] as string).toLowerCase().split(',').map((s) => s.trim()));
    }
  }
  let xff: string | undefined;
  let xfp: string | undefined;
  let xfh: string | undefined;
  let via: string | undefined;
  let host: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    const value = raw[i + 1] as string;
    const lower = name.toLowerCase();
    if (lower === 'host') host = value;
    if (REPLACED.has(lower)) {
      if (lower === 'x-forwarded-for') xff = xff === undefined ? value : `${xff}, ${value}`;
      else if (lower === 'x-forwarded-proto') xfp ??= value;
      else if (lower === 'x-forwarded-host') xfh ??= value;
      else if (lower === 'via') via = via === undefined ? value : `${via}, ${value}`;
      continue;
    }
    if (lower === opts.keyHeader && !opts.forwardKey) continue;
    if (METHOD_OVERRIDES.has(lower)) continue;
    if (HOP_BY_HOP.has(lower) || (connectionTokens !== null && connectionTokens.has(lower))) {
      if (!(opts.upgrade && (lower === 'connection' || lower === 'upgrade'))) continue;
    }
    out.push(name, value);
  }
  for (const h of identity) out.push(h);
  out.push('x-forwarded-for', trusted && xff !== undefined ? `${xff}, ${peer}` : peer);
  out.push('x-forwarded-proto', trusted && xfp !== undefined ? xfp : 'http');
  const fwdHost = trusted && xfh !== undefined ? xfh : host;
  if (fwdHost !== undefined) out.push('x-forwarded-host', fwdHost);
  out.push('via', via === undefined ? opts.via : `${via}, ${opts.via}`);
  return out;
}

/** Response headers from undici's raw list, hop-by-hop removed, `via` added. */
export function downstreamResponseHeaders(raw: readonly Buffer[], via: string): string[] {
  const out: string[] = [];
  let connectionTokens: Set<string> | null = null;
  let viaSeen = false;
  for (let i = 0; i < raw.length; i += 2) {
    const name = (raw[i] as Buffer).toString('latin1');
    const lower = name.toLowerCase();
    if (lower === 'connection') {
      connectionTokens = new Set((raw[i + 1] as Buffer).toString('latin1').toLowerCase().split(',').map((s) => s.trim()));
    }
  }
  for (let i = 0; i < raw.length; i += 2) {
    const name = (raw[i] as Buffer).toString('latin1');
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower) || (connectionTokens !== null && connectionTokens.has(lower))) continue;
    let value = (raw[i + 1] as Buffer).toString('latin1');
    if (lower === 'via') {
      value = `${value}, ${via}`;
      viaSeen = true;
    }
    out.push(name, value);
  }
  if (!viaSeen) out.push('via', via);
  return out;
}
