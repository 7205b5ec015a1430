import { statSync } from 'node:fs';
import path from 'node:path';
import { watch, type FSWatcher } from 'chokidar';
import type { Logger } from 'pino';

const POLL_MS = 2000;

export interface WatchOptions {
  file: string;
  /** Basenames starting with one of these are ignored (the database and its -wal/-shm files). */
  ignorePrefixes: readonly string[];
  /** Something in the folder changed (`watch`), or the file's stat did (`poll`): every event, not debounced. */
  onChange: (trigger: 'watch' | 'poll') => void;
  logger: Logger;
  /** How often the file is stat'ed, for file systems that send no events (default 2000 ms). */
  pollMs?: number;
}

/**
 * Watches the config file's folder rather than the file itself, so in-place
 * writes, rename-over saves, delete-and-recreate and Kubernetes' `..data`
 * symlink swaps are all seen. It only reports events: the reload machine
 * debounces them, and what changed is decided by the file's SHA-256 at reload
 * time, not by the event.
 */
export class ConfigWatcher {
  private watcher: FSWatcher | null = null;
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
      this.opts.onChange('watch');
    });
    // chokidar throttles repeated change/unlink events on one path (a second edit within
    // 50 ms is dropped, not delayed); the raw fs.watch events are never dropped.
    this.watcher.on('raw', (_event, p) => {
      const base = path.basename(String(p ?? ''));
      if (base !== '' && this.opts.ignorePrefixes.some((prefix) => base.startsWith(prefix))) return;
      this.opts.onChange('watch');
    });
    this.watcher.on('error', (err) => log.warn({ err }, 'watch error'));
    // A safety net for events a file system never sends (network mounts, some container
    // volumes): a cheap stat of the file, following symlinks, every few seconds.
    this.lastStat = this.statKey();
    this.poll = setInterval(() => {
      const key = this.statKey();
      if (key !== this.lastStat) {
        this.lastStat = key;
        this.opts.onChange('poll');
      }
    }, this.opts.pollMs ?? POLL_MS);
    this.poll.unref();
    return new Promise((resolve) => this.watcher?.once('ready', () => resolve()));
  }

  /** The file is being read now: the poll reports only what changes after this. */
  noteRead(): void {
    this.lastStat = this.statKey();
  }

  private statKey(): string {
    try {
      const s = statSync(this.opts.file);
      return `${s.ino}:${s.size}:${s.mtimeMs}`;
    } catch (err) {
      return (err as NodeJS.ErrnoException).code ?? 'error';
    }
  }

  async close(): Promise<void> {
    if (this.poll !== null) clearInterval(this.poll);
    await this.watcher?.close();
    this.watcher = null;
  }
}
