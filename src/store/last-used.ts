import type { DB } from './db.ts';

/**
 * Keeps `last_used_at` per key in memory and writes it to SQLite in batches:
 * the request path only sets a map entry; `flush` writes them all in one
 * transaction (every few seconds, and at shutdown).
 */
export class LastUsed {
  private pending = new Map<number, number>();

  touch(keyId: number, nowMs: number): void {
    this.pending.set(keyId, nowMs);
  }

  /** The newest use not yet written, in epoch ms, or null. */
  pendingAt(keyId: number): number | null {
    return this.pending.get(keyId) ?? null;
  }

  get size(): number {
    return this.pending.size;
  }

  /** Writes what is pending; returns how many keys were written. */
  flush(db: DB): number {
    if (this.pending.size === 0) return 0;
    const batch = this.pending;
    this.pending = new Map();
    const update = db.prepare(
      'UPDATE api_keys SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)',
    );
    try {
      db.transaction(() => {
        for (const [id, ms] of batch) {
          const at = new Date(ms).toISOString();
          update.run(at, id, at);
        }
      })();
    } catch (err) {
      // Keep what could not be written for the next flush.
      for (const [id, ms] of batch) if (!this.pending.has(id)) this.pending.set(id, ms);
      throw err;
    }
    return batch.size;
  }
}
