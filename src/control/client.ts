/**
 * The serving side's handle on the control plane: starts its worker thread,
 * sends it calls, and takes its one ordered stream of messages. Table updates
 * go into the KeyTable that the proxy reads: a delta at once, a whole table
 * one slice per turn of the event loop and then swapped in. A call's reply is
 * taken only after the updates posted before it, so a write the control plane
 * has answered is already enforced here.
 *
 * A control plane that dies is started again at once, resuming from the
 * table's feed position (calls in flight fail and are answered as such); one
 * whose heap grew large after a big reconcile is replaced the same way once
 * it is idle, so its garbage is given back.
 */
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import { KeyTable } from '../proxy/snapshot.ts';
import { TableFeed, type TableMessage, type TableUpdate } from '../proxy/table-feed.ts';
import { writeLogLine } from './log.ts';
import type {
  ApiArgs,
  ApiReply,
  CallName,
  ControlCalls,
  FromControl,
  ReconcileArgs,
  ReconcileOutcome,
  StartArgs,
  StartResult,
  StoreHealth,
  ToControl,
} from './protocol.ts';

/** A control plane whose heap is larger than this when idle is replaced by a fresh one. */
export const RECYCLE_HEAP_BYTES = 64 * 1024 * 1024;

export class ControlPlaneError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ControlPlaneError';
  }
}

export interface ClientOptions {
  logger: Logger;
  /** How often the control plane polls the store's feed for writes made elsewhere (0: never). */
  feedPollMs: number;
  onStoreHealth?: (h: StoreHealth) => void;
  /** Each table update, after it is applied here (for serving processes that follow this one). */
  onUpdate?: (m: TableUpdate) => void;
  /** Replace an idle control plane whose heap grew past this (default RECYCLE_HEAP_BYTES). */
  recycleHeapBytes?: number;
}

interface Pending {
  name: CallName;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

export class ControlClient {
  readonly table = new KeyTable();
  private worker: Worker | null = null;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  /** Messages in order: a table being built holds back what follows it. */
  private readonly feed: TableFeed<Exclude<FromControl, TableUpdate>>;
  private startArgs: StartArgs | null = null;
  private location: string | null = null;
  private closing = false;
  private restarting: Promise<void> | null = null;
  private resumeTimer: NodeJS.Timeout | null = null;
  private resumeFailures = 0;
  private heapBytes = 0;
  private readonly log: Logger;

  constructor(private readonly opts: ClientOptions) {
    this.log = opts.logger.child({ component: 'control' });
    this.feed = new TableFeed(
      this.table,
      (m) => this.take(m),
      (m) => this.opts.onUpdate?.(m),
    );
  }

  private spawn(): Worker {
    const w = new Worker(new URL('./worker.js', import.meta.url));
    w.on('message', (m: FromControl) => {
      if (w === this.worker) this.feed.push(m);
    });
    w.on('error', (err) => this.log.error({ err: { message: err.message } }, 'control plane failed'));
    w.on('exit', (code) => {
      if (w !== this.worker) return;
      this.worker = null;
      this.failPending(`the control plane stopped (exit code ${code})`);
      if (!this.closing) {
        this.log.error({ code }, 'control plane stopped unexpectedly: starting it again');
        void this.restart();
      }
    });
    return w;
  }

  private failPending(message: string): void {
    for (const p of this.pending.values()) p.reject(new ControlPlaneError('KG_ERR_CONTROL_STOPPED', message));
    this.pending.clear();
  }

  private send<N extends CallName>(name: N, args: Parameters<ControlCalls[N]>[0]): Promise<ReturnType<ControlCalls[N]>> {
    const w = this.worker;
    if (w === null) return Promise.reject(new ControlPlaneError('KG_ERR_CONTROL_STOPPED', 'the control plane is not running'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { name, resolve: resolve as (v: unknown) => void, reject });
      const msg: ToControl = { t: 'call', id, name, args };
      w.postMessage(msg);
    });
  }

  /** Calls made while the control plane is being replaced wait for the new one. */
  private async call<N extends CallName>(name: N, args: Parameters<ControlCalls[N]>[0]): Promise<ReturnType<ControlCalls[N]>> {
    while (this.restarting !== null) await this.restarting;
    return this.send(name, args);
  }

  /** Takes a message that is not a table update; true after an answer (its awaiter acts before later updates). */
  private take(m: Exclude<FromControl, TableUpdate>): boolean {
    switch (m.t) {
      case 'reply': {
        const p = this.pending.get(m.id);
        this.pending.delete(m.id);
        if (p === undefined) return false;
        if (m.ok) p.resolve(m.value);
        else p.reject(new ControlPlaneError(m.error.code, m.error.message));
        return true;
      }
      case 'log':
        writeLogLine(this.opts.logger, m);
        return false;
      case 'store':
        this.opts.onStoreHealth?.(m.health);
        return false;
      case 'heap':
        this.heapBytes = m.bytes;
        // After the answer it follows has been taken: replace the control plane if it grew and nothing waits on it.
        if (m.bytes > (this.opts.recycleHeapBytes ?? RECYCLE_HEAP_BYTES)) setImmediate(() => this.maybeRecycle());
        return false;
    }
  }

  /** Starts the control plane: it applies the file and sends the first table, which is in place when this resolves. */
  async start(args: Omit<StartArgs, 'resume' | 'feedPollMs'>): Promise<StartResult> {
    this.startArgs = { ...args, resume: null, feedPollMs: this.opts.feedPollMs };
    this.worker = this.spawn();
    const r = await this.send('start', this.startArgs);
    if (r.kind === 'started') this.location = r.location;
    return r;
  }

  /** After a crash: a new control plane, resuming from the table's position. */
  private restart(): Promise<void> {
    if (this.restarting !== null) return this.restarting;
    this.restarting = this.resume().finally(() => {
      this.restarting = null;
    });
    return this.restarting;
  }

  private async resume(): Promise<void> {
    const args = this.startArgs;
    if (args === null || this.location === null || this.closing) return;
    if (this.resumeTimer !== null) clearTimeout(this.resumeTimer);
    this.resumeTimer = null;
    try {
      this.worker = this.spawn();
      const r = await this.send('start', { ...args, resume: { location: this.location, position: this.table.position } });
      if (r.kind === 'started') {
        this.resumeFailures = 0;
        return;
      }
      this.log.error({ error: r.kind === 'failed' ? r.error : 'invalid' }, 'control plane could not start again');
    } catch (err) {
      this.log.error({ err: { message: (err as Error).message } }, 'control plane could not start again');
    }
    // It could not open the store (PostgreSQL away?): try again after a growing wait. Meanwhile calls
    // fail at once (management writes answer 503, reloads are retried) and the proxy serves what it has.
    const w = this.worker;
    this.worker = null;
    await w?.terminate();
    if (this.closing) return;
    this.resumeFailures++;
    const wait = Math.min(1000 * 2 ** (this.resumeFailures - 1), 30_000);
    this.resumeTimer = setTimeout(() => void this.restart(), wait);
    this.resumeTimer.unref();
  }

  /** Replaces an idle control plane whose heap grew large (after a big reconcile), so its memory is given back. */
  private maybeRecycle(): void {
    const limit = this.opts.recycleHeapBytes ?? RECYCLE_HEAP_BYTES;
    if (this.heapBytes <= limit || this.pending.size > 0 || this.restarting !== null || this.closing || this.worker === null) return;
    this.heapBytes = 0;
    const old = this.worker;
    this.restarting = (async () => {
      try {
        await this.send('close', {});
      } catch {
        // It stopped on its own meanwhile.
      }
      this.worker = null;
      await old.terminate();
      await this.resume();
    })().finally(() => {
      this.restarting = null;
    });
  }

  reconcile(args: ReconcileArgs): Promise<ReconcileOutcome> {
    return this.call('reconcile', args);
  }

  api(args: ApiArgs): Promise<ApiReply> {
    return this.call('api', args);
  }

  lastUsed(uses: Array<[number, number]>): Promise<{ written: number }> {
    return this.call('lastUsed', { uses });
  }

  /** A whole table as the control plane reads it now (for a serving process that is starting). */
  wholeTable(): Promise<TableMessage> {
    return this.call('table', {});
  }

  /** Writes what is pending and stops the control plane. */
  async close(): Promise<void> {
    if (this.closing) return;
    while (this.restarting !== null) await this.restarting;
    this.closing = true;
    if (this.resumeTimer !== null) clearTimeout(this.resumeTimer);
    const w = this.worker;
    if (w === null) return;
    try {
      await this.send('close', {});
    } catch {
      // Already stopped.
    }
    this.worker = null;
    await w.terminate();
  }
}
