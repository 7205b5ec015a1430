import { test } from 'node:test';
import assert from 'node:assert/strict';
import { authenticate, authenticateOn, type ConnectionAuth } from '../src/proxy/auth.ts';
import { buildSnapshot, type SnapshotKey } from '../src/proxy/snapshot.ts';
import { digestKey } from '../src/keys/material.ts';

const KEY = 'kg_auth_unit_key_0123456789abcdef';
const NOW = Date.parse('2026-06-01T00:00:00Z');

function snapshotWith(overrides: Partial<SnapshotKey> = {}) {
  return buildSnapshot(
    [{ id: 3, name: 'readers', allow: null }],
    [{ id: 9, name: 'reader', digest: digestKey(KEY), groupId: 3, disabled: false, expiresAt: null, allow: null, source: 'config', ...overrides }],
  );
}

test('authenticate names why a key is refused', () => {
  const snap = snapshotWith();
  assert.deepEqual(authenticate(snap, undefined, NOW), { ok: false, reason: 'missing' });
  assert.deepEqual(authenticate(snap, '', NOW), { ok: false, reason: 'missing' });
  assert.deepEqual(authenticate(snap, `${KEY}, ${KEY}`, NOW), { ok: false, reason: 'duplicate' });
  assert.deepEqual(authenticate(snap, 'kg_someone_else', NOW), { ok: false, reason: 'invalid' });
  assert.deepEqual(authenticate(snapshotWith({ disabled: true }), KEY, NOW), { ok: false, reason: 'disabled' });
  assert.deepEqual(authenticate(snapshotWith({ expiresAt: '2026-05-31T23:59:59Z' }), KEY, NOW), { ok: false, reason: 'expired' });
  const ok = authenticate(snap, KEY, NOW);
  assert.ok(ok.ok);
  assert.equal(ok.principal.name, 'reader');
  assert.equal(ok.principal.group, 'readers');
});

test('a connection remembers its key only for the snapshot it was checked against, and expiry is checked every time', () => {
  const conn: { keygateAuth?: ConnectionAuth } = {};
  const expiring = snapshotWith({ expiresAt: new Date(NOW + 1000).toISOString() });
  assert.ok(authenticateOn(conn, expiring, KEY, NOW).ok);
  assert.equal(conn.keygateAuth?.generation, expiring.generation);
  assert.ok(!('snapshot' in (conn.keygateAuth as object)), 'the connection holds no snapshot');
  // Same connection, same key, the key has expired since: refused.
  assert.deepEqual(authenticateOn(conn, expiring, KEY, NOW + 1000), { ok: false, reason: 'expired' });
  // A different value on the same connection is looked up afresh.
  assert.deepEqual(authenticateOn(conn, expiring, 'kg_someone_else', NOW), { ok: false, reason: 'invalid' });
  // A new snapshot in which the key is disabled or gone: the memory is not used.
  assert.ok(authenticateOn(conn, expiring, KEY, NOW).ok);
  assert.deepEqual(authenticateOn(conn, snapshotWith({ disabled: true }), KEY, NOW), { ok: false, reason: 'disabled' });
  assert.deepEqual(authenticateOn(conn, buildSnapshot([], []), KEY, NOW), { ok: false, reason: 'invalid' });
  // Every snapshot is told apart, even one built from the same rows.
  assert.notEqual(snapshotWith().generation, snapshotWith().generation);
});
