import { createHash, hash, randomBytes } from 'node:crypto';

/** Characters shown of a key (as Metabase shows them). */
export const PREFIX_LENGTH = 7;
/** Metabase pads the prefix with `*` to this length in `masked_key`. */
export const MASKED_LENGTH = 47;
export const DEFAULT_KEY_PREFIX = 'kg_';

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
const CHECKSUM_LENGTH = 6;

/** Hex SHA-256 of a key: what the database and the in-memory snapshot hold. */
export function digestKey(key: string): string {
  return hash('sha256', key, 'hex');
}

export function keyHashString(key: string): string {
  return `sha256:${digestKey(key)}`;
}

export function displayPrefix(key: string): string {
  return key.slice(0, PREFIX_LENGTH);
}

/** `mb_abcd***…` as Metabase shows keys; a key known only by its hash shows stars. */
export function maskKey(prefix: string | null): string {
  return (prefix ?? '').padEnd(MASKED_LENGTH, '*');
}

function toBase62(bytes: Buffer, minLength: number): string {
  let n = BigInt(`0x${bytes.toString('hex') || '0'}`);
  let out = '';
  while (n > 0n) {
    out = BASE62[Number(n % 62n)] + out;
    n /= 62n;
  }
  return out.padStart(minLength, '0');
}

/** Six base62 characters of a CRC-like checksum (SHA-256 based) of the body. */
function checksum(body: string): string {
  const h = createHash('sha256').update(body, 'utf8').digest().subarray(0, 5);
  return toBase62(h, CHECKSUM_LENGTH).slice(-CHECKSUM_LENGTH);
}

/**
 * A new key: prefix + 32 random bytes in base62 (43 chars) + 6-character checksum,
 * so that a typo is detectable without a database look-up (as GitHub's tokens).
 */
export function generateKey(prefix: string = DEFAULT_KEY_PREFIX): string {
  const body = prefix + toBase62(randomBytes(32), 43);
  return body + checksum(body);
}

/** True when a key has the shape of one made by `generateKey` with a matching checksum. */
export function hasValidChecksum(key: string): boolean {
  const m = /^([A-Za-z0-9]*_)([0-9A-Za-z]{43})([0-9A-Za-z]{6})$/.exec(key);
  if (m === null) return false;
  const body = `${m[1]}${m[2]}`;
  return checksum(body) === m[3];
}

/** Stable 48-bit integer id from a name, so replicas applying the same file agree. */
export function derivedId(kind: 'key' | 'group', name: string): number {
  const hex = hash('sha256', `keygate:${kind}:${name}`, 'hex').slice(0, 12);
  // Keep clear of the small ids used by built-in groups.
  return Number.parseInt(hex, 16) + 1000;
}

export function randomId(): number {
  return randomBytes(6).readUIntBE(0, 6) + 1000;
}
