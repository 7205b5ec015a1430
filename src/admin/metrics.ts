import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { AuthFailure } from '../proxy/auth.ts';
import type { Outcome, ProxyMetrics } from '../proxy/server.ts';

export type ReloadResult = 'success' | 'failure' | 'unchanged';

const OUTCOME_INDEX: Record<Outcome, number> = {
  forwarded: 0,
  unauthenticated: 1,
  forbidden: 2,
  throttled: 3,
  bad_request: 4,
  upstream_error: 5,
  loop: 6,
  client_closed: 7,
};

/** keygate's Prometheus metrics, on a registry of their own. */
export class Metrics implements ProxyMetrics {
  readonly registry = new Registry();
  /** Counted in plain numbers on the request path, handed to prom-client when scraped. */
  private readonly pendingRequests = new Map<number, { outcome: string; status: string; n: number }>();
  private readonly requests: Counter<'outcome' | 'status'> = new Counter({
    name: 'keygate_requests_total',
    help: 'Proxied requests by outcome and HTTP status.',
    labelNames: ['outcome', 'status'] as const,
    registers: [this.registry],
    collect: () => {
      for (const p of this.pendingRequests.values()) {
        if (p.n === 0) continue;
        this.requests.labels(p.outcome, p.status).inc(p.n);
        p.n = 0;
      }
    },
  });
  private readonly authFailures = new Counter({
    name: 'keygate_auth_failures_total',
    help: 'Failed authentications by reason (missing, invalid, expired, disabled, duplicate, throttled).',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  /** Upstream durations not yet handed to the histogram: observed in bulk at scrape time or when full. */
  private readonly pendingSeconds = new Float64Array(1024);
  private pendingCount = 0;
  private readonly upstream: Histogram = new Histogram({
    name: 'keygate_upstream_duration_seconds',
    help: 'Time from receiving a request to the end of the upstream answer.',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
    collect: () => this.observePending(),
  });
  private readonly reloads = new Counter({
    name: 'keygate_reloads_total',
    help: 'Config reloads by result (success, failure, unchanged).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly lastReloadSuccess = new Gauge({
    name: 'keygate_last_reload_success',
    help: '1 when the last reload attempt of the config file succeeded, 0 when it failed.',
    registers: [this.registry],
  });
  readonly lastReloadTimestamp = new Gauge({
    name: 'keygate_last_reload_timestamp_seconds',
    help: 'Time of the last reload attempt, as a Unix timestamp.',
    registers: [this.registry],
  });
  readonly keys = new Gauge({
    name: 'keygate_keys',
    help: 'API keys loaded, by source.',
    labelNames: ['source'] as const,
    registers: [this.registry],
  });
  readonly groups = new Gauge({
    name: 'keygate_groups',
    help: 'Groups loaded.',
    registers: [this.registry],
  });
  readonly revision = new Gauge({
    name: 'keygate_config_revision',
    help: 'Number of the revision the database is at.',
    registers: [this.registry],
  });
  readonly storeReachable = new Gauge({
    name: 'keygate_store_reachable',
    help: '1 while the database answers, 0 while it cannot be reached (the proxy keeps serving the last good keys).',
    registers: [this.registry],
  });
  readonly managementChanges = new Counter({
    name: 'keygate_management_changes_total',
    help: 'Changes made through the management API, by action.',
    labelNames: ['action'] as const,
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'keygate_' });
  }

  request(outcome: Outcome, status: number): void {
    // A number for a key: no string built per request.
    const id = (OUTCOME_INDEX[outcome] ?? 99) * 1000 + status;
    const p = this.pendingRequests.get(id);
    if (p !== undefined) p.n++;
    else this.pendingRequests.set(id, { outcome, status: String(status), n: 1 });
  }

  authFailure(reason: AuthFailure | 'throttled'): void {
    this.authFailures.labels(reason).inc();
  }

  upstreamSeconds(seconds: number): void {
    this.pendingSeconds[this.pendingCount++] = seconds;
    if (this.pendingCount === this.pendingSeconds.length) this.observePending();
  }

  private observePending(): void {
    const n = this.pendingCount;
    this.pendingCount = 0;
    for (let i = 0; i < n; i++) this.upstream.observe(this.pendingSeconds[i] as number);
  }

  reload(result: ReloadResult): void {
    this.reloads.labels(result).inc();
    this.lastReloadTimestamp.set(Date.now() / 1000);
    if (result !== 'unchanged') this.lastReloadSuccess.set(result === 'success' ? 1 : 0);
  }
}

