import { Worker } from 'node:worker_threads';
import type { Diagnostic } from '../errors.ts';
import type { ReloadOutcome, ReloadRequest } from './reload.ts';

export type WorkerRequest =
  | { id: number; kind: 'start'; file: string; dbFlag: string | undefined; env: NodeJS.ProcessEnv; cwd: string }
  | { id: number; kind: 'reload'; request: ReloadRequest };

export interface WorkerReply {
  id: number;
  heapBytes: number;
  result:
    | { kind: 'invalid'; diagnostics: Diagnostic[] }
    | { kind: 'started'; dbFile: string; outcome: ReloadOutcome }
    | { kind: 'reloaded'; outcome: ReloadOutcome }
    | { kind: 'crashed'; error: string };
}

/** A worker whose heap grew past this after a reload is closed at once, so a big file's garbage is given back. */
const RECYCLE_HEAP_BYTES = 48 * 1024 * 1024;
/** An idle worker is closed after this long; the next reload starts a fresh one (tens of milliseconds). */
export const WORKER_IDLE_MS = 5_000;

type Request = WorkerRequest extends infer R ? (R extends { id: number } ? Omit<R, 'id'> : never) : never;

/**
 * Runs reloads in a worker thread with its own database connection, one at a
 * time. The worker exists only while there is work: it is started for a
 * reload and closed once it has been idle for WORKER_IDLE_MS (at once when
 * its heap grew large), so that a daemon serving a big file does not keep a
 * second JavaScript heap and the file's garbage between reloads.
 */
export class Reloader {
  private worker: Worker | null = null;
  private dbFile: string | null = null;
  private nextId = 1;
  private closing = false;
  private idleTimer: NodeJS.Timeout | null = null;
  private readonly waiting = new Map<number, (r: WorkerReply['result']) => void>();

  constructor(private readonly idleMs = WORKER_IDLE_MS) {}

  /** Whether a worker thread is running now. */
  get running(): boolean {
    return this.worker !== null;
  }

  private spawn(): Worker {
    const w = new Worker(new URL('./reload-worker.js', import.meta.url), { workerData: { dbFile: this.dbFile } });
    w.on('message', (msg: WorkerReply) => {
      const resolve = this.waiting.get(msg.id);
      this.waiting.delete(msg.id);
      if (msg.result.kind === 'started') this.dbFile = msg.result.dbFile;
      if (w === this.worker && this.waiting.size === 0) {
        if (msg.heapBytes > RECYCLE_HEAP_BYTES) this.retire();
        else this.idleTimer = setTimeout(() => this.retire(), this.idleMs).unref();
      }
      resolve?.(msg.result);
    });
    w.on('error', (err) => this.failAll(w, `reload worker failed: ${err.message}`));
    w.on('exit', (code) => {
      if (w === this.worker) {
        // Died on its own: whatever it was doing failed; the next reload starts a new one.
        if (code !== 0 && !this.closing) this.failAll(w, `reload worker exited with code ${code}`);
        this.worker = null;
      }
    });
    return w;
  }

  private failAll(w: Worker, error: string): void {
    if (w !== this.worker) return;
    for (const resolve of this.waiting.values()) resolve({ kind: 'crashed', error });
    this.waiting.clear();
  }

  /** Closes the current worker (it finishes nothing: it is idle). */
  private retire(): void {
    if (this.idleTimer !== null) clearTimeout(this.idleTimer);
    this.idleTimer = null;
    const w = this.worker;
    if (w === null || this.waiting.size > 0) return;
    this.worker = null;
    w.postMessage({ kind: 'close' });
  }

  private send(request: Request): Promise<WorkerReply['result']> {
    if (this.idleTimer !== null) clearTimeout(this.idleTimer);
    this.idleTimer = null;
    this.worker ??= this.spawn();
    const w = this.worker;
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.waiting.set(id, resolve);
      w.postMessage({ ...request, id });
    });
  }

  start(file: string, dbFlag: string | undefined, env: NodeJS.ProcessEnv, cwd: string): Promise<WorkerReply['result']> {
    return this.send({ kind: 'start', file, dbFlag, env, cwd });
  }

  async run(request: ReloadRequest): Promise<ReloadOutcome> {
    const r = await this.send({ kind: 'reload', request });
    if (r.kind === 'reloaded') return r.outcome;
    const error = r.kind === 'crashed' ? r.error : 'unexpected worker reply';
    return { kind: 'failed', sha256: null, code: 'worker_failed', error, errors: [] };
  }

  async close(): Promise<void> {
    this.closing = true;
    if (this.idleTimer !== null) clearTimeout(this.idleTimer);
    const w = this.worker;
    if (w === null) return;
    this.worker = null;
    w.postMessage({ kind: 'close' });
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => void w.terminate().then(() => resolve()), 2000);
      w.once('exit', () => {
        clearTimeout(t);
        resolve();
      });
    });
  }
}
