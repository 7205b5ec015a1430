import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import type { Server } from 'node:http';
import os from 'node:os';
import pino, { type Logger } from 'pino';
import { AggregatorRegistry } from 'prom-client';
import path from 'node:path';
import type { Settings } from '../config/types.ts';
import { ConfigInvalidError, KeygateError, type ErrorCode } from '../errors.ts';
import { ControlClient } from '../control/client.ts';
import type { ReconcileOutcome, StoreHealth } from '../control/protocol.ts';
import { ProxyServer, type ProxyConfig } from '../proxy/server.ts';
import type { KeySnapshot } from '../proxy/snapshot.ts';
import { AdminServer } from '../admin/server.ts';
import { managementGateway } from '../admin/management.ts';
import { Metrics } from '../admin/metrics.ts';
import type { RevisionRow, StoreInfo } from '../store/types.ts';
import { startDemoUpstream } from './demo-upstream.ts';
import { ReloadMachine, type LastReload, type ReloadAction, type ReloadEvent } from './reload-machine.ts';
import { ConfigWatcher } from './watch.ts';
import { ServingWorkers } from './workers.ts';
import { CertificateWatcher, describeCertificate, loadTls, type TlsFiles, type TlsMaterial } from '../tls.ts';
import type { WireProxyConfig } from './workers-protocol.ts';

export type { LastReload } from './reload-machine.ts';

export interface DaemonOptions {
  configFile: string;
  dbFlag?: string | undefined;
  overrides: {
    listen?: string | undefined;
    adminListen?: string | undefined;
    upstream?: string | undefined;
    workers?: number | 'auto' | undefined;
    /** --tls-cert and --tls-key: both listeners. */
    tls?: TlsFiles | undefined;
  };
  env: NodeJS.ProcessEnv;
  logger: Logger;
  /** Human output: where everything is (and the demo hint), printed once at start. */
  out: (text: string) => void;
  /** How often the control plane looks for writes made by other processes (default 1000 ms). */
  feedPollMs?: number;
}

/** Longest a burst of file events may postpone a reload. */
const MAX_WAIT_MS = 1000;

/** A listener that could not listen: which one, and where. The cause is the system error (EADDRINUSE, …). */
export class ListenError extends Error {
  constructor(
    readonly listener: 'proxy' | 'admin',
    readonly address: string,
    readonly code: string,
    options: { cause: unknown },
  ) {
    super(`cannot listen on ${address} for the ${listener === 'proxy' ? 'proxy' : 'admin listener'}: ${(options.cause as Error).message}`, options);
    this.name = 'ListenError';
  }
}

async function listening(listener: 'proxy' | 'admin', at: { host: string; port: number }, listen: () => Promise<unknown>): Promise<void> {
  try {
    await listen();
  } catch (err) {
    const address = `${at.host.includes(':') ? `[${at.host}]` : at.host}:${at.port}`;
    throw new ListenError(listener, address, (err as NodeJS.ErrnoException).code ?? 'EIO', { cause: err });
  }
}

export function splitHostPort(addr: string): { host: string; port: number } {
  const i = addr.lastIndexOf(':');
  const host = addr.slice(0, i).replace(/^\[|\]$/g, '');
  return { host: host === '' ? '0.0.0.0' : host, port: Number(addr.slice(i + 1)) };
}

/**
 * `keygate serve`: the serving thread. It serves the proxy and the admin
 * listener from the table the control plane keeps up to date, watches the
 * config file and drives the reload machine, and batches key uses to the
 * control plane. It never touches the store.
 */
export class Daemon {
  readonly metrics = new Metrics();
  readonly log: Logger;
  /** The root logger, for other components' children. */
  readonly logger: Logger;
  settings!: Settings;
  private control: ControlClient | null = null;
  private machine: ReloadMachine | null = null;
  private timer: NodeJS.Timeout | null = null;
  private storeInfo: StoreInfo | null = null;
  private storeHealth: StoreHealth = { reachable: true };
  private appliedAt: string | null = null;
  private revision: RevisionRow | null = null;
  private proxy: ProxyServer | null = null;
  /** With `workers` > 1: the processes that serve the proxy (this one then serves only the admin listener). */
  private workers: ServingWorkers | null = null;
  private admin: AdminServer | null = null;
  private demo: Server | null = null;
  private watcher: ConfigWatcher | null = null;
  private certWatchers: CertificateWatcher[] = [];
  private flushTimer: NodeJS.Timeout | null = null;
  /** Key uses since the last batch sent to the control plane (id → epoch ms). */
  private uses = new Map<number, number>();
  private upstream: URL | null = null;
  private stopped = false;
  /** Set once start() has finished: a start that failed stops without a "shutting down" line. */
  private serving = false;
  private idleWaiters: Array<() => void> = [];

  constructor(private readonly opts: DaemonOptions) {
    this.logger = opts.logger;
    this.log = opts.logger.child({ component: 'daemon' });
  }

  get configFile(): string {
    return this.opts.configFile;
  }

  currentSnapshot = (): KeySnapshot => this.control?.table.current() ?? { keys: new Map(), generation: 0 };

  /** Applies the config, then serves. Throws on an invalid config or a refused apply: nothing is served then. */
  async start(): Promise<void> {
    const file = this.opts.configFile;
    this.control = new ControlClient({
      logger: this.opts.logger,
      feedPollMs: this.opts.feedPollMs ?? 1000,
      onStoreHealth: (h) => this.onStoreHealth(h),
      // Every update also goes to the serving worker processes, if any.
      onUpdate: (u) => this.workers?.publish(u),
    });
    this.metrics.storeReachable.set(1);
    // The first apply runs in the control plane too: a big file's parse never grows the serving thread's heap.
    const started = await this.control.start({ file, dbFlag: this.opts.dbFlag, env: this.opts.env, cwd: process.cwd() });
    if (started.kind === 'invalid') throw new ConfigInvalidError(file, started.diagnostics);
    if (started.kind === 'failed') throw new KeygateError(knownCode(started.code), started.error);
    const first = started.outcome;
    if (first === null || first.kind !== 'applied') {
      throw new KeygateError('KG_ERR_CONFIG_INVALID', first?.kind === 'failed' ? first.error : 'config could not be applied');
    }
    this.storeInfo = started.store;
    this.settings = this.withOverrides(first.settings);
    this.machine = new ReloadMachine({ debounceMs: this.settings.reloadDebounceMs, maxWaitMs: MAX_WAIT_MS });
    this.machine.started(first.sha256, Date.now());
    this.accept(first, 'start');

    let upstream = this.settings.upstream;
    if (upstream === null) {
      const demo = await startDemoUpstream(this.settings.keyHeader);
      this.demo = demo.server;
      upstream = demo.url.toString();
    }
    this.upstream = new URL(upstream);
    const listen = splitHostPort(this.settings.listen);
    const adminListen = splitHostPort(this.settings.adminListen);
    const workerCount = this.workerCount();
    const control = this.control;
    // TLS: read and checked before anything listens; a pair that does not load is fatal at start.
    const tlsFiles = this.tlsFiles();
    const proxyTls = tlsFiles.proxy === null ? null : loadTls(tlsFiles.proxy);
    const adminTls = tlsFiles.admin === null ? null : loadTls(tlsFiles.admin);
    if (workerCount > 1) {
      const stream = (this.opts.logger as unknown as Record<symbol, { write(s: string): unknown }>)[pino.symbols.streamSym];
      this.workers = new ServingWorkers({
        count: workerCount,
        listen,
        config: this.wireConfig(),
        flushMs: this.settings.lastUsedFlushMs,
        tls: proxyTls,
        logger: this.opts.logger,
        writeLog: (text) => stream?.write(text),
        table: () => control.wholeTable(),
        onUses: (uses) => {
          for (const [id, ms] of uses) if ((this.uses.get(id) ?? 0) < ms) this.uses.set(id, ms);
        },
      });
    } else {
      this.proxy = new ProxyServer({
        config: this.proxyConfig(),
        snapshot: this.currentSnapshot,
        logger: this.opts.logger,
        metrics: this.metrics,
        touch: (id, now) => this.uses.set(id, now),
        tls: proxyTls,
      });
    }
    this.admin = new AdminServer({
      tls: adminTls,
      metrics: this.metrics,
      metricsText: () => this.metricsText(),
      logger: this.opts.logger,
      ready: () => this.machine?.appliedSha256 != null,
      status: () => this.status(),
      api: managementGateway({
        snapshot: this.currentSnapshot,
        keyHeader: () => this.settings.keyHeader,
        failedAuthPerMinute: this.settings.failedAuthPerMinute,
        metrics: this.metrics,
        // Key uses not yet sent go first (calls are taken in order), so that last_used_at is current in the answer.
        // With serving workers, the answer waits until every one of them enforces the change.
        call: async (a) => {
          void this.flushLastUsed();
          const reply = await control.api(a);
          await this.workers?.applied(control.table.position);
          return reply;
        },
      }),
    });
    const proxy = this.proxy;
    const workers = this.workers;
    const admin = this.admin;
    await listening('proxy', listen, () => (workers !== null ? workers.start() : (proxy as ProxyServer).listen(listen.host, listen.port)));
    await listening('admin', adminListen, () => admin.listen(adminListen.host, adminListen.port));
    this.watchCertificates(tlsFiles);

    const dbFile = this.storeInfo.kind === 'sqlite' ? this.storeInfo.location : null;
    this.watcher = new ConfigWatcher({
      file,
      ignorePrefixes: dbFile !== null && path.dirname(dbFile) === path.dirname(file) ? [path.basename(dbFile)] : [],
      onChange: (trigger) => this.event({ type: 'changed', trigger }),
      logger: this.opts.logger,
    });
    await this.watcher.start();
    // An edit made between the first read and the watcher being ready is caught here (a no-op when unchanged).
    this.event({ type: 'changed', trigger: 'watch-ready' });
    this.flushTimer = setInterval(() => void this.flushLastUsed(), this.settings.lastUsedFlushMs);

    const p = this.proxyAddress();
    const a = this.admin.address();
    this.log.info(
      {
        listen: `${p.host}:${p.port}`,
        admin_listen: `${a.host}:${a.port}`,
        upstream: this.demo ? 'demo' : this.upstream.origin,
        config: file,
        database: this.storeInfo.location,
        workers: workerCount,
        tls: { proxy: proxyTls !== null, admin: adminTls !== null },
      },
      'keygate serving',
    );
    this.opts.out(this.whereEverythingIs(p, a, workerCount, { proxy: proxyTls !== null, admin: adminTls !== null }));
    this.serving = true;
  }

  /** What `serve` prints on stdout at start: where the proxy, the admin page, the file and the database are. */
  private whereEverythingIs(
    p: { host: string; port: number },
    a: { host: string; port: number },
    workers: number,
    tls: { proxy: boolean; admin: boolean },
  ): string {
    const file = this.opts.configFile;
    const c = this.control?.table.counts() ?? { keys: 0, config: 0, api: 0, groups: 0 };
    const proxyUrl = `${tls.proxy ? 'https' : 'http'}://${hostForUrl(p.host)}:${p.port}`;
    const upstream = this.demo !== null ? 'the built-in demo upstream' : (this.upstream as URL).origin;
    const shown = (f: string): string => {
      const rel = path.relative(process.cwd(), f);
      return rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel : f;
    };
    const db = this.storeInfo?.kind === 'sqlite' ? shown(this.storeInfo.location) : (this.storeInfo?.location ?? '?');
    const plural = (n: number, what: string): string => `${n} ${what}${n === 1 ? '' : 's'}`;
    let text =
      `keygate is serving${this.revision === null ? '' : ` revision ${this.revision.number}`} (${plural(c.keys, 'key')}, ${plural(c.groups, 'group')}):\n` +
      `  proxy:     ${proxyUrl} → ${upstream}${workers > 1 ? ` (${workers} processes)` : ''}\n` +
      `  admin:     ${tls.admin ? 'https' : 'http'}://${hostForUrl(a.host)}:${a.port}/ (the admin page; /status, /metrics, /healthz)\n` +
      `  config:    ${shown(file)} (watched: edits apply within a second)\n` +
      `  database:  ${db}\n`;
    if (this.demo !== null) {
      const name = this.control?.table.someConfigKeyName() ?? null;
      const hint = name === null ? 'one of your keys' : `the key of "${name}" in ${path.basename(file)}`;
      text +=
        `\nkeygate: no upstream is configured, so the built-in demo upstream answers. Try:\n` +
        `  curl -H "${this.settings.keyHeader}: $KEY" ${proxyUrl}/api/card/1   # KEY: ${hint}\n` +
        `  curl -i ${proxyUrl}/api/card/1                     # no key: 401\n`;
    }
    return text;
  }

  private withOverrides(s: Settings): Settings {
    const o = this.opts.overrides;
    return {
      ...s,
      ...(o.listen !== undefined ? { listen: o.listen } : {}),
      ...(o.adminListen !== undefined ? { adminListen: o.adminListen } : {}),
      ...(o.upstream !== undefined ? { upstream: o.upstream } : {}),
      ...(o.workers !== undefined ? { workers: o.workers } : {}),
    };
  }

  /** The certificate files of each listener, resolved against the config file's folder (null: plain HTTP). */
  private tlsFiles(): { proxy: TlsFiles | null; admin: TlsFiles | null } {
    const dir = path.dirname(this.opts.configFile);
    const resolve = (f: TlsFiles): TlsFiles => ({ cert: path.resolve(dir, f.cert), key: path.resolve(dir, f.key) });
    const proxy = this.opts.overrides.tls ?? (this.settings.tls === null ? null : resolve(this.settings.tls));
    const a = this.settings.adminTls;
    const admin = this.opts.overrides.tls !== undefined || a === null ? proxy : a === false ? null : resolve(a);
    return { proxy, admin };
  }

  /** Renewed certificate files are put in place as they change; a pair that does not load leaves the old one serving. */
  private watchCertificates(files: { proxy: TlsFiles | null; admin: TlsFiles | null }): void {
    const same = files.proxy !== null && files.admin !== null && files.proxy.cert === files.admin.cert && files.proxy.key === files.admin.key;
    const watchers: Array<{ listener: string; files: TlsFiles; apply: (m: TlsMaterial) => void }> = [];
    if (files.proxy !== null) {
      watchers.push({
        listener: same ? 'proxy and admin' : 'proxy',
        files: files.proxy,
        apply: (m) => {
          this.proxy?.setTls(m);
          this.workers?.setTls(m);
          if (same) this.admin?.setTls(m);
        },
      });
    }
    if (files.admin !== null && !same) watchers.push({ listener: 'admin', files: files.admin, apply: (m) => this.admin?.setTls(m) });
    const log = this.opts.logger.child({ component: 'tls' });
    for (const w of watchers) {
      const watcher = new CertificateWatcher({
        files: w.files,
        onChange: (m) => {
          w.apply(m);
          log.info({ listener: w.listener, ...describeCertificate(m) }, 'TLS certificate reloaded');
        },
        onError: (err) => log.error({ listener: w.listener, error: err.message }, 'TLS certificate reload failed: still serving the previous certificate'),
      });
      watcher.start();
      this.certWatchers.push(watcher);
    }
  }

  private workerCount(): number {
    const w = this.settings.workers;
    return w === 'auto' ? os.availableParallelism() : w;
  }

  private proxyAddress(): { host: string; port: number } {
    if (this.workers !== null) {
      if (this.workers.address === null) throw new Error('the serving workers are not listening');
      return this.workers.address;
    }
    if (this.proxy === null) throw new Error('daemon is not serving');
    return this.proxy.address();
  }

  private wireConfig(): WireProxyConfig {
    const c = this.proxyConfig();
    return { ...c, upstream: c.upstream.toString() };
  }

  /** /metrics: this process's metrics, summed with the serving workers' when there are any. */
  private async metricsText(): Promise<string> {
    if (this.workers === null) return this.metrics.registry.metrics();
    const all = [await this.metrics.registry.getMetricsAsJSON(), ...(await this.workers.metrics())];
    return AggregatorRegistry.aggregate(all).metrics();
  }

  private proxyConfig(): ProxyConfig {
    return {
      upstream: this.upstream as URL,
      keyHeader: this.settings.keyHeader,
      forwardKey: this.settings.forwardKey,
      trustedProxies: this.settings.trustedProxies,
      upstreamTimeoutMs: this.settings.upstreamTimeoutMs,
      failedAuthPerMinute: this.settings.failedAuthPerMinute,
    };
  }

  /** Feeds the reload machine one event and carries out what it asks. */
  private event(e: ReloadEvent): void {
    if (this.machine === null) return;
    const actions = this.machine.handle(e, Date.now());
    if (this.log.isLevelEnabled('debug')) {
      this.log.debug({ event: e.type, ...('trigger' in e ? { trigger: e.trigger } : {}), actions: actions.map((a) => a.type) }, 'reload event');
    }
    for (const a of actions) this.act(a);
    if (this.machine.idle) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  private act(a: ReloadAction): void {
    switch (a.type) {
      case 'arm':
        if (this.timer !== null) clearTimeout(this.timer);
        this.timer = setTimeout(() => {
          this.timer = null;
          this.event({ type: 'timer' });
        }, Math.max(0, a.at - Date.now()));
        return;
      case 'disarm':
        if (this.timer !== null) clearTimeout(this.timer);
        this.timer = null;
        return;
      case 'hash':
        this.watcher?.noteRead();
        // Streamed through SHA-256 in small reads: no control plane work for a touch or a resync that changed nothing.
        void fileSha256(this.opts.configFile).then((sha256) => this.event({ type: 'hashed', sha256 }));
        return;
      case 'reconcile': {
        this.watcher?.noteRead();
        const control = this.control;
        if (control === null) return;
        void control.reconcile({ skipIfSha256: a.skipIfSha256 }).then(
          (outcome) => this.event({ type: 'reconciled', outcome }),
          (err: unknown) =>
            this.event({
              type: 'reconciled',
              outcome: { kind: 'failed', sha256: null, code: 'control_failed', error: (err as Error).message, errors: [], retryable: true },
            }),
        );
        return;
      }
      case 'applied':
        this.accept(a.outcome, a.trigger);
        return;
      case 'unchanged':
        this.metrics.reload('unchanged');
        if (a.recovered) this.metrics.lastReloadSuccess.set(1);
        return;
      case 'failed': {
        const o = a.outcome;
        this.metrics.reload('failure');
        if (a.log) {
          this.log.error(
            { trigger: a.trigger, code: o.code, error: o.error, errors: o.errors.slice(0, 20), ...(a.retryAt !== null ? { retry_at: new Date(a.retryAt).toISOString() } : {}) },
            'config reload failed: still serving the last good config',
          );
        }
        return;
      }
    }
  }

  /** Takes an applied reconcile: status, metrics, and settings the serving side follows. */
  private accept(o: Extract<ReconcileOutcome, { kind: 'applied' }>, trigger: string): void {
    this.appliedAt = new Date().toISOString();
    this.revision = o.revision;
    this.metrics.reload('success');
    if (o.revision !== null) this.metrics.revision.set(o.revision.number);
    this.updateGauges();
    for (const w of o.warnings) this.log.warn({ warning: w }, 'config warning');
    // The counts in force once the change is applied (the deletion guard's own counts stay out of the line).
    const counts = this.control?.table.counts() ?? { keys: 0, config: 0, api: 0, groups: 0 };
    const { create, update, delete: deleted, unchanged } = o.summary;
    this.log.info(
      {
        trigger,
        revision: o.revision?.number ?? null,
        sha256: o.sha256,
        create,
        update,
        delete: deleted,
        unchanged,
        config_keys: counts.config,
        api_keys: counts.api,
        groups: counts.groups,
        changes: o.changed.slice(0, 20),
      },
      o.changed.length === 0 ? 'config applied: no changes' : 'config applied',
    );
    // A reload that finishes during shutdown changes no listener: the proxy may be closed already.
    if ((this.proxy !== null || this.workers !== null) && !this.stopped) {
      const next = this.withOverrides(o.settings);
      for (const field of ['listen', 'adminListen', 'database', 'reloadDebounceMs', 'lastUsedFlushMs', 'workers', 'tls', 'adminTls'] as const) {
        if (JSON.stringify(next[field]) !== JSON.stringify(this.settings[field])) {
          this.log.warn({ setting: field }, 'setting changed in the file: it takes effect after a restart');
        }
      }
      const { listen, adminListen, database, workers, tls, adminTls } = this.settings;
      this.settings = { ...next, listen, adminListen, database, workers, tls, adminTls };
      if (next.upstream !== null) {
        this.upstream = new URL(next.upstream);
        if (this.demo !== null) {
          // The file names a real upstream now: the demo is no longer needed.
          const demo = this.demo;
          this.demo = null;
          demo.close();
          this.log.info({ upstream: this.upstream.origin }, 'upstream configured: the demo upstream is stopped');
        }
      } else if (this.demo === null) {
        this.log.warn('keygate.upstream was removed from the file: still forwarding to the last one until a restart');
      }
      this.proxy?.reconfigure(this.proxyConfig());
      this.workers?.reconfigure(this.wireConfig());
    }
  }

  private updateGauges(): void {
    const c = this.control?.table.counts();
    if (c === undefined) return;
    this.metrics.keys.labels('config').set(c.config);
    this.metrics.keys.labels('api').set(c.api);
    this.metrics.groups.set(c.groups);
  }

  private onStoreHealth(h: StoreHealth): void {
    const back = h.reachable && !this.storeHealth.reachable;
    this.storeHealth = h;
    this.metrics.storeReachable.set(h.reachable ? 1 : 0);
    // An edit that waited for the database is applied now, not at the end of its retry back-off
    // (a no-op, by hash, when the file is the applied one).
    if (back) this.event({ type: 'changed', trigger: 'database-reachable' });
  }

  /** Forces a reload (SIGHUP), or asks for one as a file event would; resolves once the daemon is idle again. */
  reload(force: boolean, trigger: string): Promise<void> {
    if (this.stopped || this.machine === null) return Promise.resolve();
    const done = new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    this.event(force ? { type: 'force', trigger } : { type: 'changed', trigger });
    return done;
  }

  /** Sends the key uses seen since the last batch to the control plane, which writes them. */
  async flushLastUsed(): Promise<void> {
    if (this.uses.size === 0 || this.control === null) return;
    const batch = [...this.uses];
    this.uses = new Map();
    try {
      await this.control.lastUsed(batch);
    } catch (err) {
      for (const [id, ms] of batch) if ((this.uses.get(id) ?? 0) < ms) this.uses.set(id, ms);
      this.log.warn({ err: { message: (err as Error).message } }, 'last-used flush failed; will retry');
    }
  }

  status(): object {
    this.updateGauges();
    const m = this.machine;
    const c = this.control?.table.counts() ?? { keys: 0, config: 0, api: 0, groups: 0 };
    const rev = this.revision;
    return {
      config_file: this.opts.configFile,
      database: this.storeInfo?.location ?? null,
      store: { kind: this.storeInfo?.kind ?? null, reachable: this.storeHealth.reachable, error: this.storeHealth.reachable ? null : this.storeHealth.error },
      ready: m?.appliedSha256 != null,
      applied: {
        sha256: m?.appliedSha256 ?? null,
        at: this.appliedAt,
        revision: rev?.number ?? null,
        revision_applied_at: rev?.appliedAt ?? null,
      },
      file_in_sync: m?.fileInSync ?? true,
      last_reload: m?.lastReload ?? null,
      keys: { total: c.keys, config: c.config, api: c.api },
      groups: c.groups,
      // Moves on every write to keys or groups this process has taken in (a reconcile, a management
      // call, another replica's write): the admin page reloads its lists when it moves.
      changes: this.control?.table.position?.seq ?? null,
      // The header keys are read from (not a secret): the admin page sends the admin key in it.
      key_header: this.settings?.keyHeader ?? null,
      upstream: this.demo !== null ? 'demo' : (this.upstream?.origin ?? null),
      ...(this.workers !== null ? { workers: this.workers.status() } : {}),
    };
  }

  addresses(): { proxy: { host: string; port: number }; admin: { host: string; port: number } } {
    if (this.admin === null) throw new Error('daemon is not serving');
    return { proxy: this.proxyAddress(), admin: this.admin.address() };
  }

  /** Graceful stop: stop accepting, let in-flight requests finish, flush key uses, close the store. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    const graceMs = this.settings?.shutdownGraceMs ?? 0;
    // After a failed start there is nothing to shut down that anyone used: the caller reports the failure.
    if (this.serving) this.log.info({ grace_ms: graceMs }, 'shutting down');
    if (this.flushTimer !== null) clearInterval(this.flushTimer);
    this.event({ type: 'stop' });
    for (const w of this.certWatchers) w.close();
    await this.watcher?.close();
    await Promise.all([this.proxy?.close(graceMs), this.workers?.stop(graceMs), this.admin?.close()]);
    await this.flushLastUsed();
    await this.control?.close();
    await new Promise<void>((resolve) => (this.demo === null ? resolve() : this.demo.close(() => resolve())));
    if (this.serving) this.log.info('stopped');
  }
}

const KNOWN: readonly ErrorCode[] = ['KG_ERR_DELETION_GUARD', 'KG_ERR_APPLY_FAILED', 'KG_ERR_DATABASE', 'KG_ERR_STORE_UNAVAILABLE', 'KG_ERR_CONFIG_INVALID'];

function knownCode(code: string): ErrorCode {
  return (KNOWN as readonly string[]).includes(code) ? (code as ErrorCode) : 'KG_ERR_APPLY_FAILED';
}

function hostForUrl(host: string): string {
  if (host === '0.0.0.0' || host === '::') return '127.0.0.1';
  return host.includes(':') ? `[${host}]` : host;
}

/** The SHA-256 of a file, read in chunks so that a big file does not hold the serving thread; null when it cannot be read. */
async function fileSha256(file: string): Promise<string | null> {
  try {
    const hash = createHash('sha256');
    for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
    return hash.digest('hex');
  } catch {
    return null;
  }
}
