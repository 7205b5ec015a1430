/**
 * When to reload the config file, as a state machine: events in (something
 * changed in the file's folder, SIGHUP, the timer fired, the file's hash, the
 * outcome of a reconcile), actions out (arm the timer, hash the file,
 * reconcile it, and what to report). It keeps no timers and reads no clock:
 * every event comes with the time, so that tests say "given these events at
 * these times, expect these actions" (as Kubernetes' sample-controller tests
 * its sync handler), and the daemon carries the actions out.
 *
 * - Debounce: a burst of events is one reload, `debounceMs` after the last
 *   event, and never more than `maxWaitMs` after the first.
 * - Unchanged bytes: a file whose SHA-256 is the applied one is not reconciled.
 * - Coalescing: events during a reload make one more reload after it.
 * - Retries: a failure that may pass on its own (the database busy or
 *   unreachable, the file unreadable) is tried again after a growing wait.
 * - Last good: a failure changes nothing that is served; it is reported
 *   (logged once per distinct error) until a reload succeeds or the file
 *   comes back to the applied bytes.
 */
import type { ReconcileOutcome } from '../control/protocol.ts';

export interface LastReload {
  at: string;
  result: 'success' | 'failure' | 'unchanged';
  trigger: string;
  error: string | null;
  errors: string[];
  /** SHA-256 of the file as read by this attempt (null when unreadable). */
  sha256: string | null;
}

export type ReloadEvent =
  | { type: 'changed'; trigger: string }
  | { type: 'force'; trigger: string }
  | { type: 'timer' }
  | { type: 'hashed'; sha256: string | null }
  | { type: 'reconciled'; outcome: ReconcileOutcome }
  | { type: 'stop' };

type Failed = Extract<ReconcileOutcome, { kind: 'failed' }>;
type Applied = Extract<ReconcileOutcome, { kind: 'applied' }>;

export type ReloadAction =
  /** (Re)arm the one timer to fire at `at` (epoch ms); it answers with `timer`. */
  | { type: 'arm'; at: number }
  | { type: 'disarm' }
  /** Hash the file; answer with `hashed`. */
  | { type: 'hash' }
  /** Reconcile the file (skipped by the control plane when its hash is `skipIfSha256`); answer with `reconciled`. */
  | { type: 'reconcile'; skipIfSha256: string | null; trigger: string }
  | { type: 'applied'; outcome: Applied; trigger: string }
  /** The file holds the applied bytes; `recovered` when that ends a failure. */
  | { type: 'unchanged'; sha256: string; recovered: boolean }
  /** A failed reload; `log` is false for the same error again; `retryAt` when it will be tried again by itself. */
  | { type: 'failed'; outcome: Failed; trigger: string; log: boolean; retryAt: number | null };

export interface MachineOptions {
  debounceMs: number;
  maxWaitMs: number;
  /** First wait before retrying a retryable failure; it doubles up to `retryMaxMs`. */
  retryMs?: number;
  retryMaxMs?: number;
}

type Phase = 'idle' | 'waiting' | 'hashing' | 'reconciling' | 'backoff' | 'stopped';

export class ReloadMachine {
  private phase: Phase = 'idle';
  private burstStart = 0;
  private trigger = 'watch';
  /** Something happened while busy: reload again after this one. */
  private dirty = false;
  /** A forced reload (SIGHUP) is waiting: it skips the unchanged-bytes check. */
  private forced = false;
  private forcedTrigger = 'SIGHUP';
  private retries = 0;
  private appliedSha: string | null = null;
  private last: LastReload | null = null;
  private lastLoggedError: string | null = null;

  constructor(private readonly opts: MachineOptions) {}

  get appliedSha256(): string | null {
    return this.appliedSha;
  }

  get lastReload(): LastReload | null {
    return this.last;
  }

  /** False while the last attempt failed: the file on disk is not what is served. */
  get fileInSync(): boolean {
    return this.last?.result !== 'failure';
  }

  get busy(): boolean {
    return this.phase === 'hashing' || this.phase === 'reconciling';
  }

  get idle(): boolean {
    return this.phase === 'idle' || this.phase === 'stopped';
  }

  /** The first apply, made at start-up. */
  started(sha256: string, nowMs: number): void {
    this.appliedSha = sha256;
    this.last = { at: iso(nowMs), result: 'success', trigger: 'start', error: null, errors: [], sha256 };
  }

  handle(e: ReloadEvent, nowMs: number): ReloadAction[] {
    if (this.phase === 'stopped') return [];
    switch (e.type) {
      case 'stop':
        this.phase = 'stopped';
        return [{ type: 'disarm' }];
      case 'changed':
        this.trigger = e.trigger;
        if (this.busy) {
          this.dirty = true;
          return [];
        }
        if (this.phase !== 'waiting') {
          this.phase = 'waiting';
          this.burstStart = nowMs;
        }
        return [{ type: 'arm', at: Math.min(nowMs + this.opts.debounceMs, this.burstStart + this.opts.maxWaitMs) }];
      case 'force':
        if (this.busy) {
          this.dirty = true;
          this.forced = true;
          this.forcedTrigger = e.trigger;
          return [];
        }
        return [{ type: 'disarm' }, this.reconcileNow(null, e.trigger)];
      case 'timer':
        if (this.phase !== 'waiting' && this.phase !== 'backoff') return [];
        if (this.forced) {
          this.forced = false;
          return [this.reconcileNow(null, this.forcedTrigger)];
        }
        this.phase = 'hashing';
        return [{ type: 'hash' }];
      case 'hashed':
        if (this.phase !== 'hashing') return [];
        if (e.sha256 !== null && e.sha256 === this.appliedSha) return [...this.unchanged(e.sha256, nowMs), ...this.next()];
        return [this.reconcileNow(this.appliedSha, this.trigger)];
      case 'reconciled':
        if (this.phase !== 'reconciling') return [];
        return this.outcome(e.outcome, nowMs);
    }
  }

  private reconcileNow(skipIfSha256: string | null, trigger: string): ReloadAction {
    this.phase = 'reconciling';
    this.trigger = trigger;
    return { type: 'reconcile', skipIfSha256, trigger };
  }

  private unchanged(sha256: string, nowMs: number): ReloadAction[] {
    // A file that came back to the applied bytes after a failure is in sync again.
    const recovered = this.last?.result === 'failure';
    if (recovered) {
      this.last = { at: iso(nowMs), result: 'unchanged', trigger: this.trigger, error: null, errors: [], sha256 };
      // The incident is over: the same failure happening again is a new one, and is logged.
      this.lastLoggedError = null;
    }
    this.retries = 0;
    return [{ type: 'unchanged', sha256, recovered }];
  }

  private outcome(o: ReconcileOutcome, nowMs: number): ReloadAction[] {
    const trigger = this.trigger;
    if (o.kind === 'unchanged') return [...this.unchanged(o.sha256, nowMs), ...this.next()];
    if (o.kind === 'applied') {
      this.appliedSha = o.sha256;
      this.retries = 0;
      this.last = { at: iso(nowMs), result: 'success', trigger, error: null, errors: [], sha256: o.sha256 };
      this.lastLoggedError = null;
      return [{ type: 'applied', outcome: o, trigger }, ...this.next()];
    }
    this.last = { at: iso(nowMs), result: 'failure', trigger, error: o.error, errors: o.errors, sha256: o.sha256 };
    const log = o.error !== this.lastLoggedError;
    this.lastLoggedError = o.error;
    if (this.dirty || !o.retryable) return [{ type: 'failed', outcome: o, trigger, log, retryAt: null }, ...this.next()];
    this.retries++;
    const wait = Math.min((this.opts.retryMs ?? 1000) * 2 ** (this.retries - 1), this.opts.retryMaxMs ?? 30_000);
    this.phase = 'backoff';
    return [
      { type: 'failed', outcome: o, trigger, log, retryAt: nowMs + wait },
      { type: 'arm', at: nowMs + wait },
    ];
  }

  /** After a reload: another one at once if something happened meanwhile, else idle. */
  private next(): ReloadAction[] {
    if (!this.dirty) {
      this.phase = 'idle';
      return [];
    }
    this.dirty = false;
    if (this.forced) {
      this.forced = false;
      return [this.reconcileNow(null, this.forcedTrigger)];
    }
    this.phase = 'hashing';
    return [{ type: 'hash' }];
  }
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}
