import { digestKey } from '../keys/material.ts';
import type { KeySnapshot, Principal } from './snapshot.ts';

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
  const principal = snapshot.keys.get(digestKey(value));
  if (principal === undefined) return { ok: false, reason: 'invalid' };
  if (principal.disabled) return { ok: false, reason: 'disabled' };
  if (principal.expiresAtMs !== null && nowMs >= principal.expiresAtMs) return { ok: false, reason: 'expired' };
  return { ok: true, principal };
}
