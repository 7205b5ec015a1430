import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import type { Server } from 'node:http';
import type { Logger } from 'pino';
import path from 'node:path';
import type { Settings } from '../config/types.ts';
import { ConfigInvalidError, KeygateError } from '../errors.ts';
import { openDatabase, type DB } from '../store/db.ts';
import { LastUsed } from '../store/last-used.ts';
import { latestRevision, readStoreState, type RevisionRow, type StoreState } from '../store/state.ts';
import { buildSnapshot, EMPTY_SNAPSHOT, type KeySnapshot } from '../proxy/snapshot.ts';
import { ProxyServer, type ProxyConfig } from '../proxy/server.ts';
import { AdminServer, type ApiHandler } from '../admin/server.ts';
import { Metrics } from '../admin/metrics.ts';
import { startDemoUpstream } from './demo-upstream.ts';
import type { ReloadOutcome } from './reload.ts';
import { Reloader } from './reloader.ts';
import { ConfigWatcher } from './watch.ts';

export interface DaemonOptions {
  configFile: string;
  dbFlag?: string | undefined;
  overrides: { listen?: string | undefined; adminListen?: string | undefined; upstream?: string | undefined };
  env: NodeJS.ProcessEnv;
  logger: Logger;
  /** Human output (the demo hint), printed once. */
  out: (text: string) => void;
  /** Builds the management API once the daemon's parts exist. */
  api?: (daemon: Daemon) => ApiHandler;
}

export interface LastReload {
  at: string;
  result: 'success' | 'failure' | 'unchanged';
  trigger: string;
  error: string | null;
  errors: string[];
  /** SHA-256 of the file as read by this attempt (null when unreadable). */
  sha256: string | null;
}

export function splitHostPort(addr: string): { host: string; port: number } {
  const i = addr.lastIndexOf(':');
  const host = addr.slice(0, i).replace(/^\[|\]$/g, '');
  return { host: host === '' ? '0.0.0.0' : host, port: Number(addr.slice(i + 1)) };
}

/** `keygate serve`: apply, watch, proxy, admin. */
export class Daemon {
  readonly metrics = new Metrics();
  readonly lastUsed = new LastUsed();
  readonly log: Logger;
  /** The root logger, for other components' children. */
  readonly logger: Logger;
  db!: DB;
  dbFile = '';
  settings!: Settings;
  private snapshot: KeySnapshot = EMPTY_SNAPSHOT;
  /** What /status shows of the state; the rows themselves are not kept (the snapshot is). */
  private counts = { keys: 0, config: 0, api: 0, groups: 0, firstConfigKey: null as string | null };
  private appliedSha: string | null = null;
  private appliedAt: string | null = null;
  private revision: RevisionRow | null = null;
  private lastReload: LastReload | null = null;
  private lastLoggedError: string | null = null;
  private proxy: ProxyServer | null = null;
  private admin: AdminServer | null = null;
  private demo: Server | null = null;
  private reloader: Reloader | null = null;
  private watcher: ConfigWatcher | null = null;
  private flushTimer: NodeJS.Timeout | null = null;
  private reloading: Promise<void> | null = null;
  private reloadAgain: { force: boolean; trigger: string } | null = null;
  private upstream: URL | null = null;
  private stopped = false;
  private apiWrites = 0;

  constructor(private readonly opts: DaemonOptions) {
    this.logger = opts.logger;
    this.log = opts.logger.child({ component: 'daemon' });
  }

  get configFile(): string {
    return this.opts.configFile;
  }

  currentSnapshot = (): KeySnapshot => this.snapshot;

  /** Applies the config, then serves. Throws on an invalid config or a refused apply: nothing is served then. */
  async start(): Promise<void> {
    const file = this.opts.configFile;
    // Even the first apply runs in the worker: a big file's parse never grows the serving thread's heap.
    this.reloader = new Reloader();
    const started = await this.reloader.start(file, this.opts.dbFlag, this.opts.env, process.cwd());
    if (started.kind === 'invalid') throw new ConfigInvalidError(file, started.diagnostics);
    if (started.kind !== 'started') throw new KeygateError('KG_ERR_APPLY_FAILED', started.kind === 'crashed' ? started.error : 'config could not be applied');
    const first = started.outcome;
    if (first.kind !== 'applied') {
      throw new KeygateError(
        first.kind === 'failed' && first.code === 'KG_ERR_DELETION_GUARD' ? 'KG_ERR_DELETION_GUARD' : 'KG_ERR_CONFIG_INVALID',
        first.kind === 'failed' ? first.error : 'config could not be applied',
      );
    }
    this.dbFile = started.dbFile;
    this.db = openDatabase(this.dbFile);
    this.settings = this.withOverrides(first.settings);
    this.accept(first, 'start');

    let upstream = this.settings.upstream;
    if (upstream === null) {
      const demo = await startDemoUpstream(this.settings.keyHeader);
      this.demo = demo.server;
      upstream = demo.url.toString();
    }
    this.upstream = new URL(upstream);
    this.proxy = new ProxyServer({
      config: this.proxyConfig(),
      snapshot: this.currentSnapshot,
      logger: this.opts.logger,
      metrics: this.metrics,
      touch: (id, now) => this.lastUsed.touch(id, now),
    });
    this.admin = new AdminServer({
      metrics: this.metrics,
      logger: this.opts.logger,
      ready: () => this.appliedSha !== null,
      status: () => this.status(),
      ...(this.opts.api ? { api: this.opts.api(this) } : {}),
    });
    const listen = splitHostPort(this.settings.listen);
    const adminListen = splitHostPort(this.settings.adminListen);
    await this.proxy.listen(listen.host, listen.port);
    await this.admin.listen(adminListen.host, adminListen.port);

    const dbBase = path.basename(this.dbFile);
    this.watcher = new ConfigWatcher({
      file,
      debounceMs: this.settings.reloadDebounceMs,
      maxWaitMs: 1000,
      ignorePrefixes: path.dirname(this.dbFile) === path.dirname(file) ? [dbBase] : [],
      onChange: () => void this.reload(false, 'watch'),
      logger: this.opts.logger,
    });
    await this.watcher.start();
    // An edit made between the first read and the watcher being ready is caught here (a no-op when unchanged).
    void this.reload(false, 'watch-ready');
    this.flushTimer = setInterval(() => this.flushLastUsed(), this.settings.lastUsedFlushMs);

    const p = this.proxy.address();
    const a = this.admin.address();
    this.log.info(
      { listen: `${p.host}:${p.port}`, admin_listen: `${a.host}:${a.port}`, upstream: this.demo ? 'demo' : this.upstream.origin, config: file, database: this.dbFile },
      'keygate serving',
    );
    if (this.demo !== null) {
      const first = this.counts.firstConfigKey;
      const hint = first === null ? 'one of your keys' : `the key of "${first}" in ${path.basename(file)}`;
      this.opts.out(
        `keygate: no upstream is configured, so the built-in demo upstream answers. Try:\n` +
          `  curl -H "x-api-key: $KEY" http://${hostForUrl(p.host)}:${p.port}/api/card/1   # KEY: ${hint}\n` +
          `  curl -i http://${hostForUrl(p.host)}:${p.port}/api/card/1                     # no key: 401\n`,
      );
    }
  }

  private withOverrides(s: Settings): Settings {
    const o = this.opts.overrides;
    return {
      ...s,
      ...(o.listen !== undefined ? { listen: o.listen } : {}),
      ...(o.adminListen !== undefined ? { adminListen: o.adminListen } : {}),
      ...(o.upstream !== undefined ? { upstream: o.upstream } : {}),
    };
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

  /** Takes an applied reload: swaps the snapshot in whole. */
  private accept(o: Extract<ReloadOutcome, { kind: 'applied' }>, trigger: string): void {
    this.setState(o.state);
    this.appliedSha = o.sha256;
    this.appliedAt = new Date().toISOString();
    this.revision = o.revision;
    this.lastReload = { at: this.appliedAt, result: 'success', trigger, error: null, errors: [], sha256: o.sha256 };
    this.lastLoggedError = null;
    this.metrics.reload('success');
    if (o.revision !== null) this.metrics.revision.set(o.revision.number);
    for (const w of o.warnings) this.log.warn({ warning: w }, 'config warning');
    this.log.info(
      { trigger, revision: o.revision?.number ?? null, sha256: o.sha256, ...o.summary, changes: o.changed.slice(0, 20) },
      o.changed.length === 0 ? 'config applied: no changes' : 'config applied',
    );
    // A reload that finishes during shutdown changes no listener: the proxy may be closed already.
    if (this.proxy !== null && !this.stopped) {
      const next = this.withOverrides(o.settings);
      for (const field of ['listen', 'adminListen', 'database', 'reloadDebounceMs', 'lastUsedFlushMs'] as const) {
        if (next[field] !== this.settings[field]) {
          this.log.warn({ setting: field }, 'setting changed in the file: it takes effect after a restart');
        }
      }
      this.settings = { ...next, listen: this.settings.listen, adminListen: this.settings.adminListen, database: this.settings.database };
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
      this.proxy.reconfigure(this.proxyConfig());
    }
  }

  /** Replaces the proxy's view of keys and groups (after a reload or a management API change). */
  setState(state: StoreState): void {
    this.snapshot = buildSnapshot(state.groups, state.keys);
    const api = state.keys.filter((k) => k.source === 'api').length;
    this.counts = {
      keys: state.keys.length,
      config: state.keys.length - api,
      api,
      groups: state.groups.length,
      firstConfigKey: state.keys.find((k) => k.source === 'config')?.name ?? null,
    };
    this.metrics.keys.labels('config').set(this.counts.config);
    this.metrics.keys.labels('api').set(api);
    this.metrics.groups.set(state.groups.length);
  }

  /**
   * After a management API write: re-read keys and groups, so that the next
   * request sees the change. A reload already under way read the database
   * before this write; `apiWrites` tells `take` to re-read after it.
   */
  noteApiWrite(): void {
    this.apiWrites++;
    this.setState(readStoreState(this.db));
  }

  /** Reloads the config (off the serving thread); concurrent calls coalesce. */
  reload(force: boolean, trigger: string): Promise<void> {
    if (this.stopped || this.reloader === null) return Promise.resolve();
    if (this.reloading !== null) {
      this.reloadAgain = { force: force || (this.reloadAgain?.force ?? false), trigger };
      return this.reloading;
    }
    this.reloading = (async () => {
      try {
        await this.reloadLoop({ force, trigger });
      } catch (err) {
        // Never leave hot reload stuck behind a rejected promise: report it; the next event retries.
        this.log.error({ err: { message: (err as Error).message } }, 'config reload failed unexpectedly');
      } finally {
        this.reloading = null;
      }
    })();
    return this.reloading;
  }

  private async reloadLoop(first: { force: boolean; trigger: string }): Promise<void> {
    let next: { force: boolean; trigger: string } | null = first;
    while (next !== null && !this.stopped && this.reloader !== null) {
      this.reloadAgain = null;
      const writesBefore = this.apiWrites;
      const skipIf = next.force ? null : this.appliedSha;
      // Unchanged bytes are told here, streaming the file through SHA-256 in small steps: no
      // worker is started for an editor's touch or a ConfigMap resync that changed nothing.
      const outcome: ReloadOutcome =
        skipIf !== null && (await fileSha256(this.opts.configFile)) === skipIf
          ? { kind: 'unchanged', sha256: skipIf }
          : await this.reloader.run({ file: this.opts.configFile, skipIfSha256: skipIf, env: this.opts.env });
      this.take(outcome, next.trigger);
      if (outcome.kind === 'applied' && this.apiWrites !== writesBefore) this.setState(readStoreState(this.db));
      next = this.reloadAgain;
    }
  }

  private take(o: ReloadOutcome, trigger: string): void {
    if (o.kind === 'applied') return this.accept(o, trigger);
    const at = new Date().toISOString();
    if (o.kind === 'unchanged') {
      this.metrics.reload('unchanged');
      // A file that came back to the applied bytes after a failure is in sync again.
      if (this.lastReload?.result === 'failure') {
        this.lastReload = { at, result: 'unchanged', trigger, error: null, errors: [], sha256: o.sha256 };
        this.metrics.lastReloadSuccess.set(1);
        // The incident is over: the same failure happening again is a new one, and is logged.
        this.lastLoggedError = null;
      }
      return;
    }
    this.lastReload = { at, result: 'failure', trigger, error: o.error, errors: o.errors, sha256: o.sha256 };
    this.metrics.reload('failure');
    if (o.error !== this.lastLoggedError) {
      this.lastLoggedError = o.error;
      this.log.error({ trigger, code: o.code, error: o.error, errors: o.errors.slice(0, 20) }, 'config reload failed: still serving the last good config');
    }
  }

  flushLastUsed(): void {
    try {
      this.lastUsed.flush(this.db);
    } catch (err) {
      this.log.warn({ err: { message: (err as Error).message } }, 'last-used flush failed; will retry');
    }
  }

  status(): object {
    const rev = this.revision ?? (this.db ? latestRevision(this.db) : null);
    return {
      config_file: this.opts.configFile,
      database: this.dbFile,
      ready: this.appliedSha !== null,
      applied: {
        sha256: this.appliedSha,
        at: this.appliedAt,
        revision: rev?.number ?? null,
        revision_applied_at: rev?.appliedAt ?? null,
      },
      file_in_sync: this.lastReload?.result !== 'failure',
      last_reload: this.lastReload,
      keys: { total: this.counts.keys, config: this.counts.config, api: this.counts.api },
      groups: this.counts.groups,
      upstream: this.demo !== null ? 'demo' : (this.upstream?.origin ?? null),
    };
  }

  addresses(): { proxy: { host: string; port: number }; admin: { host: string; port: number } } {
    if (this.proxy === null || this.admin === null) throw new Error('daemon is not serving');
    return { proxy: this.proxy.address(), admin: this.admin.address() };
  }

  /** Graceful stop: stop accepting, let in-flight requests finish, flush, close. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    const graceMs = this.settings?.shutdownGraceMs ?? 0;
    this.log.info({ grace_ms: graceMs }, 'shutting down');
    if (this.flushTimer !== null) clearInterval(this.flushTimer);
    await this.watcher?.close();
    await Promise.all([this.proxy?.close(graceMs), this.admin?.close()]);
    await this.reloading?.catch(() => undefined);
    await this.reloader?.close();
    if (this.db !== undefined) {
      this.flushLastUsed();
      this.db.close();
    }
    await new Promise<void>((resolve) => (this.demo === null ? resolve() : this.demo.close(() => resolve())));
    this.log.info('stopped');
  }
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
