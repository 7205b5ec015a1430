/**
 * Per-address token bucket for failed authentications: `perMinute` tokens,
 * refilled continuously. A request from an address whose bucket is empty is
 * answered 429 before any key look-up.
 */
export class FailedAuthThrottle {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  private readonly ratePerMs: number;

  constructor(
    private readonly perMinute: number,
    private readonly maxAddresses = 100_000,
  ) {
    this.ratePerMs = perMinute / 60_000;
  }

  private refill(addr: string, now: number): { tokens: number; at: number } | undefined {
    const b = this.buckets.get(addr);
    if (b === undefined) return undefined;
    b.tokens = Math.min(this.perMinute, b.tokens + (now - b.at) * this.ratePerMs);
    b.at = now;
    if (b.tokens >= this.perMinute) {
      this.buckets.delete(addr);
      return undefined;
    }
    return b;
  }

  /** Seconds to wait when the address is throttled now, else 0. */
  retryAfterSeconds(addr: string, now: number): number {
    const b = this.refill(addr, now);
    if (b === undefined || b.tokens >= 1) return 0;
    return Math.max(1, Math.ceil((1 - b.tokens) / this.ratePerMs / 1000));
  }

  /** Records one failed authentication from the address. */
  fail(addr: string, now: number): void {
    const b = this.refill(addr, now);
    if (b !== undefined) {
      b.tokens = Math.max(0, b.tokens - 1);
      return;
    }
    if (this.buckets.size >= this.maxAddresses) this.sweep(now);
    if (this.buckets.size >= this.maxAddresses) {
      const oldest = this.buckets.keys().next().value;
      if (oldest !== undefined) this.buckets.delete(oldest);
    }
    this.buckets.set(addr, { tokens: this.perMinute - 1, at: now });
  }

  /** Drops buckets that have refilled completely. */
  sweep(now: number): void {
    for (const addr of [...this.buckets.keys()]) this.refill(addr, now);
  }

  get size(): number {
    return this.buckets.size;
  }
}
