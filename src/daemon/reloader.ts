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

/** A worker whose heap grew past this after a reload is replaced, so a big file's garbage is given back. */
const RECYCLE_HEAP_BYTES = 48 * 1024 * 1024;

type Request = WorkerRequest extends infer R ? (R extends { id: number } ? Omit<R, 'id'> : never) : never;

/**
 * Runs reloads in a worker thread with its own database connection, one at a
 * time. A worker that grew large is swapped for a fresh one after its reply.
 */
export class Reloader {
  private worker: Worker;
  private dbFile: string | null = null;
  private nextId = 1;
  private closing = false;
  private readonly waiting = new Map<number, (r: WorkerReply['result']) => void>();

  constructor() {
    this.worker = this.spawn();
  }

  private spawn(): Worker {
    const w = new Worker(new URL('./reload-worker.js', import.meta.url), { workerData: { dbFile: this.dbFile } });
    w.on('message', (msg: WorkerReply) => {
      const resolve = this.waiting.get(msg.id);
      this.waiting.delete(msg.id);
      if (msg.result.kind === 'started') this.dbFile = msg.result.dbFile;
      if (msg.heapBytes > RECYCLE_HEAP_BYTES && w === this.worker) this.recycle();
      resolve?.(msg.result);
    });
    w.on('error', (err) => this.failAll(w, `reload worker failed: ${err.message}`));
    w.on('exit', (code) => {
      if (w === this.worker && code !== 0 && !this.closing) {
        this.failAll(w, `reload worker exited with code ${code}`);
        this.worker = this.spawn();
      }
    });
    return w;
  }

  private failAll(w: Worker, error: string): void {
    if (w !== this.worker) return;
    for (const resolve of this.waiting.values()) resolve({ kind: 'crashed', error });
    this.waiting.clear();
  }

  private recycle(): void {
    const old = this.worker;
    this.worker = this.spawn();
    old.postMessage({ kind: 'close' });
  }

  private send(request: Request): Promise<WorkerReply['result']> {
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.waiting.set(id, resolve);
      this.worker.postMessage({ ...request, id });
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
    const w = this.worker;
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
