import { Worker } from 'node:worker_threads';
import type { ReloadOutcome, ReloadRequest } from './reload.ts';

/** Runs reloads in a worker thread, one at a time. */
export class Reloader {
  private readonly worker: Worker;
  private nextId = 1;
  private readonly waiting = new Map<number, (o: ReloadOutcome) => void>();
  private failed: Error | null = null;

  constructor(dbFile: string) {
    this.worker = new Worker(new URL('./reload-worker.js', import.meta.url), { workerData: { dbFile } });
    this.worker.on('message', (msg: { id: number; outcome: ReloadOutcome }) => {
      const resolve = this.waiting.get(msg.id);
      this.waiting.delete(msg.id);
      resolve?.(msg.outcome);
    });
    this.worker.on('error', (err) => {
      this.failed = err;
      for (const resolve of this.waiting.values()) {
        resolve({ kind: 'failed', sha256: null, code: 'worker_failed', error: `reload worker failed: ${err.message}`, errors: [] });
      }
      this.waiting.clear();
    });
    this.worker.unref();
  }

  run(request: ReloadRequest): Promise<ReloadOutcome> {
    if (this.failed !== null) {
      return Promise.resolve({ kind: 'failed', sha256: null, code: 'worker_failed', error: `reload worker failed: ${this.failed.message}`, errors: [] });
    }
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.waiting.set(id, resolve);
      this.worker.postMessage({ id, request });
    });
  }

  async close(): Promise<void> {
    this.worker.postMessage({ close: true });
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => void this.worker.terminate().then(() => resolve()), 2000);
      this.worker.once('exit', () => {
        clearTimeout(t);
        resolve();
      });
    });
  }
}
