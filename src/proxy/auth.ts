import { tableKeyOf, type KeySnapshot, type Principal } from './snapshot.ts';

export type AuthFailure = 'missing' | 'duplicate' | 'invalid' | 'expired' | 'disabled';
export type AuthResult = { ok: true; principal: Principal } | { ok: false; reason: AuthFailure };

/**
 * Checks a key header value against the snapshot. Expected outcomes are values;
 * this never throws. `value` is the header as Node joined it: a repeated header
 * arrives as "a, b" (keys contain no whitespace, so ", " means "sent twice").
 */
export function authenticate(snapshot: KeySnapshot, value: string | undefined, nowMs: number): AuthResult {
  if (value === undefined || value === '') return { ok: false, reason: 'missing' };
  if (value.includes(', ')) return { ok: false, reason: 'duplicate' };
  const principal = snapshot.keys.get(tableKeyOf(value));
  if (principal === undefined) return { ok: false, reason: 'invalid' };
  return admit(principal, nowMs);
}

function admit(principal: Principal, nowMs: number): AuthResult {
  if (principal.disabled) return { ok: false, reason: 'disabled' };
  if (principal.expiresAtMs !== null && nowMs >= principal.expiresAtMs) return { ok: false, reason: 'expired' };
  return { ok: true, principal };
}

/** The last key a connection authenticated with, and against which snapshot (by generation: an old snapshot is not kept alive). */
export interface ConnectionAuth {
  value: string;
  generation: number;
  principal: Principal;
}

/**
 * `authenticate`, remembering the last success per connection: a keep-alive
 * client that sends the same key again skips the digest and the look-up,
 * while disabled and expiry are still checked on every request. The memory
 * is only used while the snapshot is the same one, so a reload that
 * removes, disables or changes the key takes effect on open connections too.
 */
export function authenticateOn(
  conn: { keygateAuth?: ConnectionAuth },
  snapshot: KeySnapshot,
  value: string | undefined,
  nowMs: number,
): AuthResult {
  const last = conn.keygateAuth;
  if (last !== undefined && last.value === value && last.generation === snapshot.generation) return admit(last.principal, nowMs);
  const r = authenticate(snapshot, value, nowMs);
  if (r.ok) conn.keygateAuth = { value: value as string, generation: snapshot.generation, principal: r.principal };
  return r;
}
