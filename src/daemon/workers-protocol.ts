/**
 * What keygate's main process and its serving worker processes (`serve
 * --workers N`) say to each other over the cluster IPC channel (advanced
 * serialization: buffers travel as buffers).
 */
import type { MetricObjectWithValues, MetricValue } from 'prom-client';
import type { TableUpdate } from '../proxy/table-feed.ts';
import type { FeedPosition } from '../store/types.ts';
import type { TlsMaterial } from '../tls.ts';

/** The proxy's settings, as they cross the process boundary (the upstream as text). */
export interface WireProxyConfig {
  upstream: string;
  keyHeader: string;
  forwardKey: boolean;
  trustedProxies: readonly string[];
  upstreamTimeoutMs: number;
  failedAuthPerMinute: number;
}

export type ToWorker =
  | { t: 'init'; config: WireProxyConfig; listen: { host: string; port: number }; flushMs: number; tls: TlsMaterial | null }
  /** A renewed certificate for the proxy listener. */
  | { t: 'tls'; tls: TlsMaterial }
  | TableUpdate
  | { t: 'config'; config: WireProxyConfig }
  | { t: 'metrics'; id: number }
  | { t: 'stop'; graceMs: number };

export type FromWorker =
  /** The worker's code is loaded and listens for messages: it can be given `init`. */
  | { t: 'ready' }
  | { t: 'listening'; host: string; port: number }
  | { t: 'listen-failed'; code: string; message: string }
  | { t: 'applied'; position: FeedPosition | null }
  | { t: 'uses'; uses: Array<[number, number]> }
  | { t: 'metrics'; id: number; metrics: Array<MetricObjectWithValues<MetricValue<string>>> };
