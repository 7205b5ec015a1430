/**
 * The serving worker processes of `keygate serve --workers N`, seen from the
 * main process: forks them (node:cluster, sharing the proxy's listening
 * socket), gives each a whole table and then every update the control plane
 * publishes, knows which update each has applied (so that a management write
 * is answered only once every worker enforces it), gathers their metrics and
 * key uses, forwards their log lines whole, starts a new one when one dies,
 * and stops them all gracefully.
 */
import cluster, { type Worker } from 'node:cluster';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import type { MetricObjectWithValues, MetricValue } from 'prom-client';
import type { TableMessage, TableUpdate } from '../proxy/table-feed.ts';
import type { FeedPosition } from '../store/types.ts';
import type { TlsMaterial } from '../tls.ts';
import type { FromWorker, ToWorker, WireProxyConfig } from './workers-protocol.ts';

export interface PoolOptions {
  count: number;
  listen: { host: string; port: number };
  config: WireProxyConfig;
  flushMs: number;
  /** The proxy listener's certificate and key, or null for plain HTTP. */
  tls: TlsMaterial | null;
  logger: Logger;
  /** Writes complete log lines from the workers to the main process's log stream. */
  writeLog: (text: string) => void;
  /** A whole table for a worker that is starting (from the control plane). */
  table: () => Promise<TableMessage>;
  /** Key uses reported by a worker. */
  onUses: (uses: Array<[number, number]>) => void;
}

interface Member {
  worker: Worker;
  /** Takes updates (it has been given a whole table). */
  live: boolean;
  applied: FeedPosition | null;
  stopping: boolean;
}

type Metrics = Array<MetricObjectWithValues<MetricValue<string>>>;

/** Forwards a stream's text in whole lines, so that lines of several processes never mix. */
function lineForwarder(write: (text: string) => void): { data: (chunk: Buffer) => void; end: () => void } {
  let rest = '';
  return {
    data: (chunk) => {
      const text = rest + chunk.toString('utf8');
      const cut = text.lastIndexOf('\n');
      if (cut === -1) {
        rest = text;
        return;
      }
      write(text.slice(0, cut + 1));
      rest = text.slice(cut + 1);
    },
    end: () => {
      if (rest !== '') write(`${rest}\n`);
      rest = '';
    },
  };
}

export class ServingWorkers {
  private readonly members = new Map<number, Member>();
  private readonly waiters: Array<{ target: FeedPosition; resolve: () => void }> = [];
  /** Metrics asked of the workers: who still owes an answer (a worker that exits owes none). */
  private readonly metricRequests = new Map<number, { owed: Set<number>; got: Metrics[]; resolve: (m: Metrics[]) => void }>();
  private nextRequest = 1;
  private stopped = false;
  private config: WireProxyConfig;
  private tls: TlsMaterial | null;
  private readonly log: Logger;
  address: { host: string; port: number } | null = null;

  constructor(private readonly opts: PoolOptions) {
    this.config = opts.config;
    this.tls = opts.tls;
    this.log = opts.logger.child({ component: 'workers' });
    cluster.setupPrimary({
      exec: fileURLToPath(new URL('./serve-worker.js', import.meta.url)),
      args: [],
      serialization: 'advanced',
      silent: true,
    });
  }

  /** Forks the workers and resolves once every one listens (rejects with the listen error of one that cannot). */
  async start(): Promise<void> {
    const started = Array.from({ length: this.opts.count }, () => this.fork());
    const addresses = await Promise.all(started);
    this.address = addresses[0] ?? null;
  }

  private fork(): Promise<{ host: string; port: number }> {
    const worker = cluster.fork();
    // A message to a worker that has just gone (cluster answering its listen after a failed start) fails with EPIPE: not fatal.
    worker.on('error', (err: Error) => this.log.debug({ pid: worker.process.pid, err }, 'message to a serving worker failed'));
    const m: Member = { worker, live: false, applied: null, stopping: false };
    this.members.set(worker.id, m);
    for (const stream of [worker.process.stdout, worker.process.stderr]) {
      if (stream === null) continue;
      const f = lineForwarder(this.opts.writeLog);
      stream.on('data', f.data);
      stream.on('end', f.end);
    }
    return new Promise((resolve, reject) => {
      worker.on('message', (msg: FromWorker) => {
        switch (msg.t) {
          case 'ready':
            // The table first, then listen: the worker's feed holds `init` until the table is in place,
            // so it takes no connection before it knows the keys. One that cannot get a table is replaced.
            this.join(m).then(
              () => this.send(m, { t: 'init', config: this.config, listen: this.opts.listen, flushMs: this.opts.flushMs, tls: this.tls }),
              (err: Error) => {
                reject(err);
                worker.kill();
              },
            );
            return;
          case 'listening':
            resolve({ host: msg.host, port: msg.port });
            return;
          case 'listen-failed':
            reject(Object.assign(new Error(msg.message), { code: msg.code }));
            return;
          case 'applied':
            m.applied = msg.position;
            this.settle();
            return;
          case 'uses':
            this.opts.onUses(msg.uses);
            return;
          case 'metrics': {
            const r = this.metricRequests.get(msg.id);
            if (r === undefined || !r.owed.delete(worker.id)) return;
            r.got.push(msg.metrics);
            this.answered(msg.id);
            return;
          }
        }
      });
      worker.on('exit', (code, signal) => {
        this.members.delete(worker.id);
        reject(new Error(`serving worker ${worker.process.pid} exited (code ${code}) before it listened`));
        this.settle();
        // A worker that died will not answer: it owes nothing.
        for (const [id, r] of this.metricRequests) if (r.owed.delete(worker.id)) this.answered(id);
        if (this.stopped || m.stopping) return;
        this.log.error({ pid: worker.process.pid, code, signal }, 'serving worker died: starting another');
        setTimeout(() => {
          if (!this.stopped) this.fork().catch((err: Error) => this.log.error({ err: { message: err.message } }, 'serving worker could not start'));
        }, 500).unref();
      });
    });
  }

  /** Gives a new worker a whole table; from then on it gets every update. */
  private async join(m: Member): Promise<void> {
    const t = await this.opts.table();
    if (!this.members.has(m.worker.id)) return;
    this.send(m, t);
    m.live = true;
  }

  /** Resolves a metrics request once no worker owes it an answer. */
  private answered(id: number): void {
    const r = this.metricRequests.get(id);
    if (r === undefined || r.owed.size > 0) return;
    this.metricRequests.delete(id);
    r.resolve(r.got);
  }

  private send(m: Member, msg: ToWorker): void {
    if (m.worker.isConnected()) m.worker.send(msg);
  }

  /** Relays an update the control plane published (already applied in this process). */
  publish(u: TableUpdate): void {
    for (const m of this.members.values()) if (m.live) this.send(m, u);
  }

  /** A renewed certificate: every worker (and every one started later) takes it. */
  setTls(tls: TlsMaterial): void {
    this.tls = tls;
    for (const m of this.members.values()) this.send(m, { t: 'tls', tls });
  }

  reconfigure(config: WireProxyConfig): void {
    this.config = config;
    for (const m of this.members.values()) this.send(m, { t: 'config', config });
  }

  /** Resolves once every live worker has applied `target` or a later position (a worker that dies no longer counts). */
  applied(target: FeedPosition | null): Promise<void> {
    if (target === null) return Promise.resolve();
    return new Promise((resolve) => {
      this.waiters.push({ target, resolve });
      this.settle();
    });
  }

  private settle(): void {
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      const w = this.waiters[i] as { target: FeedPosition; resolve: () => void };
      let all = true;
      for (const m of this.members.values()) {
        if (!m.live) continue;
        const a = m.applied;
        if (a === null || a.epoch !== w.target.epoch || a.seq < w.target.seq) all = false;
      }
      if (all) {
        this.waiters.splice(i, 1);
        w.resolve();
      }
    }
  }

  /** Every worker's metrics, as prom-client JSON. */
  metrics(): Promise<Metrics[]> {
    const live = [...this.members.values()].filter((m) => m.worker.isConnected());
    if (live.length === 0) return Promise.resolve([]);
    const id = this.nextRequest++;
    return new Promise((resolve) => {
      this.metricRequests.set(id, { owed: new Set(live.map((m) => m.worker.id)), got: [], resolve });
      for (const m of live) this.send(m, { t: 'metrics', id });
    });
  }

  /** What /status shows of the workers. */
  status(): Array<{ pid: number | undefined; feed_seq: number | null }> {
    return [...this.members.values()].map((m) => ({ pid: m.worker.process.pid, feed_seq: m.applied?.seq ?? null }));
  }

  /** Stops every worker: each lets its in-flight requests finish within `graceMs`, then exits. */
  async stop(graceMs: number): Promise<void> {
    this.stopped = true;
    const exits = [...this.members.values()].map(
      (m) =>
        new Promise<void>((resolve) => {
          if (m.worker.isDead()) return resolve();
          m.stopping = true;
          // A worker that does not end in time is killed: shutdown always ends.
          const kill = setTimeout(() => m.worker.process.kill('SIGKILL'), graceMs + 5000);
          m.worker.once('exit', () => {
            clearTimeout(kill);
            resolve();
          });
          this.send(m, { t: 'stop', graceMs });
        }),
    );
    await Promise.all(exits);
    for (const w of this.waiters.splice(0)) w.resolve();
  }
}
