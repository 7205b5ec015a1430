import path from 'node:path';
import { watch, type FSWatcher } from 'chokidar';
import type { Logger } from 'pino';

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
    this.watcher.on('error', (err) => log.warn({ err }, 'watch error'));
    return new Promise((resolve) => this.watcher?.once('ready', () => resolve()));
  }

  private schedule(): void {
    const now = Date.now();
    if (this.timer === null) this.burstStart = now;
    else clearTimeout(this.timer);
    const wait = Math.max(0, Math.min(this.opts.debounceMs, this.burstStart + this.opts.maxWaitMs - now));
    this.timer = setTimeout(() => {
      this.timer = null;
      this.opts.onChange();
    }, wait);
  }

  async close(): Promise<void> {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    await this.watcher?.close();
    this.watcher = null;
  }
}
