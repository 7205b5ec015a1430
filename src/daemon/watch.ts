import { statSync } from 'node:fs';
import path from 'node:path';
import { watch, type FSWatcher } from 'chokidar';
import type { Logger } from 'pino';

const POLL_MS = 2000;

export interface WatchOptions {
  file: string;
  debounceMs: number;
  /** Longest a burst of events may postpone a reload. */
  maxWaitMs: number;
  /** Basenames starting with one of these are ignored (the database and its -wal/-shm files). */
  ignorePrefixes: readonly string[];
  onChange: () => void;
  logger: Logger;
}

/**
 * Watches the config file's folder rather than the file itself, so in-place
 * writes, rename-over saves, delete-and-recreate and Kubernetes' `..data`
 * symlink swaps are all seen. Events are debounced; what changed is decided by
 * the file's SHA-256 at reload time, not by the event.
 */
export class ConfigWatcher {
  private watcher: FSWatcher | null = null;
  private timer: NodeJS.Timeout | null = null;
  private burstStart = 0;
  private poll: NodeJS.Timeout | null = null;
  private lastStat = '';

  constructor(private readonly opts: WatchOptions) {}

  start(): Promise<void> {
    const dir = path.dirname(this.opts.file);
    const ignore = (p: string): boolean => {
      if (p === dir) return false;
      const base = path.basename(p);
      return this.opts.ignorePrefixes.some((prefix) => base.startsWith(prefix));
    };
    this.watcher = watch(dir, {
      ignoreInitial: true,
      depth: 0,
      ignored: ignore,
      followSymlinks: false,
      atomic: false,
    });
    const log = this.opts.logger.child({ component: 'watch' });
    this.watcher.on('all', (event, p) => {
      log.debug({ event, path: p }, 'config folder changed');
      this.schedule();
    });
    // chokidar throttles repeated change/unlink events on one path (a second edit within
    // 50 ms is dropped, not delayed); the raw fs.watch events are never dropped.
    this.watcher.on('raw', (_event, p) => {
      const base = path.basename(String(p ?? ''));
      if (base !== '' && this.opts.ignorePrefixes.some((prefix) => base.startsWith(prefix))) return;
      this.schedule();
    });
    this.watcher.on('error', (err) => log.warn({ err }, 'watch error'));
    // A safety net for events a file system never sends (network mounts, some container
    // volumes): a cheap stat of the file, following symlinks, every few seconds.
    this.lastStat = this.statKey();
    this.poll = setInterval(() => {
      const key = this.statKey();
      if (key !== this.lastStat) {
        this.lastStat = key;
        this.schedule();
      }
    }, POLL_MS);
    this.poll.unref();
    return new Promise((resolve) => this.watcher?.once('ready', () => resolve()));
  }

  private statKey(): string {
    try {
      const s = statSync(this.opts.file);
      return `${s.ino}:${s.size}:${s.mtimeMs}`;
    } catch (err) {
      return (err as NodeJS.ErrnoException).code ?? 'error';
    }
  }

  private schedule(): void {
    const now = Date.now();
    if (this.timer === null) this.burstStart = now;
    else clearTimeout(this.timer);
    const wait = Math.max(0, Math.min(this.opts.debounceMs, this.burstStart + this.opts.maxWaitMs - now));
    this.timer = setTimeout(() => {
      this.timer = null;
      // The reload reads what is there now: the poll only fires for what changes after this.
      this.lastStat = this.statKey();
      this.opts.onChange();
    }, wait);
  }

  async close(): Promise<void> {
    if (this.poll !== null) clearInterval(this.poll);
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    await this.watcher?.close();
    this.watcher = null;
  }
}
