/**
 * The one control plane. It owns the store and every write to it: file
 * reconciles, management-API commands and last-used batches all run here, one
 * at a time, in the order they arrive (as Caddy serialises file and admin-API
 * changes under one lock). After each write, and whenever the store's feed
 * moved because another process wrote (another replica, `keygate apply`), it
 * reads what changed and publishes it to the serving side: a delta, or a whole
 * table in slices when the change is large or the position cannot be
 * continued from. The serving side applies what it is sent and never
 * touches the store.
 *
 * It runs in a worker thread (worker.ts); nothing here depends on that, so
 * tests drive it in-process.
 */
import { displayName, type LoadResult } from '../config/load.ts';
import { locateDatabase } from '../config/locate.ts';
import type { Settings } from '../config/types.ts';
import { KeygateError } from '../errors.ts';
import { displayLocation, openStore } from '../store/open.ts';
import type { FeedPosition, Store } from '../store/types.ts';
import type { TableMessage } from '../proxy/table-feed.ts';
import { managementApi } from './api.ts';
import { readConfig, reconcileFile } from './reconcile-file.ts';
import type { Log } from './log.ts';
import {
  TABLE_SLICE_KEYS,
  type ApiArgs,
  type ApiReply,
  type FromControl,
  type ReconcileArgs,
  type ReconcileOutcome,
  type StartArgs,
  type StartResult,
  type StoreHealth,
} from './protocol.ts';

/** A change touching more keys than this is sent as a whole table, built in slices, rather than one delta. */
export const DELTA_MAX_KEYS = 2 * TABLE_SLICE_KEYS;

export interface PlaneDeps {
  log: Log;
  /** Sends a message to the serving side; `transfer` lists buffers handed over rather than copied. */
  post: (m: FromControl, transfer?: ArrayBuffer[]) => void;
  now?: () => Date;
  /** Opens the store for a location (tests pass their own). */
  open?: (location: string) => Promise<Store>;
}

export class ControlPlane {
  private store: Store | null = null;
  private file = '';
  private env: NodeJS.ProcessEnv = {};
  private settings: Settings | null = null;
  /** The position of the last table or delta published. */
  private cursor: FeedPosition | null = null;
  /** Key uses not yet written to the store (id → epoch ms), merged from the serving side's batches. */
  private pendingUses = new Map<number, number>();
  private tail: Promise<unknown> = Promise.resolve();
  private health: StoreHealth = { reachable: true };
  private closed = false;
  private api: ((a: ApiArgs) => Promise<ApiReply>) | null = null;
  private storeWatch: { close(): void } | null = null;
  /** A feed poll queued and not yet started. */
  private pollWaiting: Promise<void> | null = null;
  private readonly log: Log;
  private readonly now: () => Date;

  constructor(private readonly deps: PlaneDeps) {
    this.log = deps.log.child({ component: 'control' });
    this.now = deps.now ?? (() => new Date());
  }

  /** Runs jobs one at a time, in arrival order; a failed job does not stop the ones after it. */
  private serial<T>(job: () => Promise<T>): Promise<T> {
    const run = this.tail.then(job, job);
    this.tail = run.catch(() => undefined);
    return run;
  }

  private requireStore(): Store {
    if (this.store === null) throw new KeygateError('KG_ERR_DATABASE', 'the control plane has not been started');
    return this.store;
  }

  start(a: StartArgs): Promise<StartResult> {
    return this.serial(async () => {
      this.file = a.file;
      this.env = a.env;
      let location: string;
      let loaded: { sha256: string; result: LoadResult } | undefined;
      if (a.resume !== null) location = a.resume.location;
      else {
        // Read and checked once: the database's location may come from the file, and the first apply uses it as read.
        const read = await readConfig(a.file, a.env);
        if ('kind' in read) return { kind: 'invalid', diagnostics: [{ file: displayName(a.file), line: 1, column: 1, path: '', code: read.code, message: read.error.replace(`${a.file}: `, '') }] };
        const result = read.result as LoadResult;
        if (!result.ok) return { kind: 'invalid', diagnostics: result.errors };
        this.settings = result.desired.settings;
        location = locateDatabase(a.dbFlag, result.desired.settings.database, a.file, a.env, a.cwd);
        loaded = { sha256: read.sha256, result };
      }
      try {
        this.store = await (this.deps.open ?? ((l: string) => openStore(l)))(location);
      } catch (err) {
        const e = err as KeygateError;
        return { kind: 'failed', code: e.code ?? 'KG_ERR_DATABASE', error: e.message };
      }
      this.api = managementApi({
        store: this.store,
        configFile: () => this.file,
        now: this.now,
        pendingUse: (id) => this.pendingUses.get(id) ?? null,
        log: this.deps.log,
      });
      // Writes made elsewhere (another replica, `keygate apply`) are noticed at once where the store can say so.
      this.storeWatch = this.store.watch(() => void this.pollFeed());
      let outcome: ReconcileOutcome | null = null;
      if (a.resume === null) {
        outcome = await this.reconcileFile({ skipIfSha256: null }, false, loaded);
        if (outcome.kind === 'failed') return { kind: 'failed', code: outcome.code, error: outcome.error };
        await this.publishTable();
      } else {
        this.cursor = a.resume.position;
        await this.publishChanges();
      }
      return { kind: 'started', store: { ...this.store.info, location: displayLocation(this.store.info.location) }, location, outcome };
    });
  }

  /** Reads the config file and reconciles it into the store (skipped when its bytes are the applied ones). */
  reconcile(a: ReconcileArgs): Promise<ReconcileOutcome> {
    return this.serial(() => this.reconcileFile(a, true));
  }

  private async reconcileFile(a: ReconcileArgs, publish: boolean, loaded?: { sha256: string; result: LoadResult }): Promise<ReconcileOutcome> {
    const { outcome } = await reconcileFile(this.requireStore(), {
      file: this.file,
      env: this.env,
      skipIfSha256: a.skipIfSha256,
      allowDeletes: a.allowDeletes === true,
      now: this.now(),
      ...(loaded !== undefined ? { loaded } : {}),
    });
    if (outcome.kind === 'applied') {
      this.settings = outcome.settings;
      this.noteHealth({ reachable: true });
      if (publish) await this.publishChanges();
    } else if (outcome.kind === 'failed' && outcome.code === 'KG_ERR_STORE_UNAVAILABLE') {
      this.noteHealth({ reachable: false, error: outcome.error });
    }
    return outcome;
  }

  /** Runs a management API request; its write is published before the answer is returned. */
  runApi(a: ApiArgs): Promise<ApiReply> {
    return this.serial(async () => {
      if (this.api === null) throw new KeygateError('KG_ERR_DATABASE', 'the control plane has not been started');
      // The admin key's own use counts as use.
      this.pendingUses.set(a.actor.id, Math.max(this.pendingUses.get(a.actor.id) ?? 0, this.now().getTime()));
      try {
        const reply = await this.api(a);
        this.noteHealth({ reachable: true });
        if (reply.action !== null) await this.publishChanges();
        return reply;
      } catch (err) {
        if (err instanceof KeygateError && err.code === 'KG_ERR_STORE_UNAVAILABLE') {
          this.noteHealth({ reachable: false, error: err.message });
          return unavailable(err.message);
        }
        throw err;
      }
    });
  }

  /** Takes a batch of key uses from the serving side and writes what is pending (keeping the latest of each key). */
  lastUsed(uses: ReadonlyArray<[number, number]>): Promise<{ written: number }> {
    for (const [id, ms] of uses) {
      if ((this.pendingUses.get(id) ?? 0) < ms) this.pendingUses.set(id, ms);
    }
    return this.serial(() => this.flushUses());
  }

  private async flushUses(): Promise<{ written: number }> {
    if (this.store === null || this.pendingUses.size === 0) return { written: 0 };
    const batch = this.pendingUses;
    this.pendingUses = new Map();
    try {
      await this.store.recordLastUsed(batch);
      return { written: batch.size };
    } catch (err) {
      // Keep what could not be written for the next batch.
      for (const [id, ms] of batch) if ((this.pendingUses.get(id) ?? 0) < ms) this.pendingUses.set(id, ms);
      this.log.warn({ err: { message: (err as Error).message } }, 'last-used write failed; will retry');
      return { written: 0 };
    }
  }

  /** Looks for writes made elsewhere (the feed moved) and publishes them. Called on a timer and on notifications. */
  pollFeed(): Promise<void> {
    if (this.store === null || this.closed) return Promise.resolve();
    // One poll waiting is enough: while the store is slow to answer (a lost connection waiting for its
    // timeout), the timer's and the notifications' polls must not pile up behind it.
    if (this.pollWaiting !== null) return this.pollWaiting;
    const poll = this.serial(async () => {
      this.pollWaiting = null;
      const store = this.store;
      if (store === null || this.closed) return;
      try {
        const pos = await store.position();
        if (this.cursor === null || pos.seq !== this.cursor.seq || pos.epoch !== this.cursor.epoch) await this.publishChanges();
        this.noteHealth({ reachable: true });
      } catch (err) {
        this.noteHealth({ reachable: false, error: (err as Error).message });
      }
    });
    this.pollWaiting = poll;
    return poll;
  }

  private noteHealth(h: StoreHealth): void {
    const was = this.health;
    this.health = h;
    if (was.reachable === h.reachable && (h.reachable || (!was.reachable && was.error === h.error))) return;
    if (h.reachable) this.log.info({}, 'database reachable again');
    else this.log.error({ error: h.error }, 'database unreachable: serving the last good keys');
    this.deps.post({ t: 'store', health: h });
  }

  /** Publishes what changed since the cursor: a delta, or a whole table when it is large or the cursor is stale. */
  private async publishChanges(): Promise<void> {
    const store = this.requireStore();
    if (this.cursor === null) return this.publishTable();
    const cs = await store.changesSince(this.cursor);
    if (cs.stale || cs.keys.length + cs.deletedKeys.length > DELTA_MAX_KEYS) return this.publishTable();
    if (cs.position.seq === this.cursor.seq && cs.position.epoch === this.cursor.epoch) return;
    this.deps.post({
      t: 'delta',
      position: cs.position,
      groups: cs.groups,
      keys: cs.keys,
      deletedGroups: cs.deletedGroups,
      deletedKeys: cs.deletedKeys,
    });
    this.cursor = cs.position;
  }

  private async tableMessage(): Promise<TableMessage> {
    const snap = await this.requireStore().snapshot();
    const encoder = new TextEncoder();
    const slices: Uint8Array[] = [];
    for (let i = 0; i < snap.keys.length; i += TABLE_SLICE_KEYS) {
      slices.push(encoder.encode(JSON.stringify(snap.keys.slice(i, i + TABLE_SLICE_KEYS))));
    }
    return { t: 'table', position: snap.position, groups: snap.groups, slices };
  }

  private async publishTable(): Promise<void> {
    const m = await this.tableMessage();
    this.deps.post(m, m.slices.map((s) => s.buffer as ArrayBuffer));
    this.cursor = m.position;
  }

  /** A whole table for a serving process that is starting: answered, not published. */
  wholeTable(): Promise<TableMessage> {
    return this.serial(() => this.tableMessage());
  }

  /** Writes pending uses and closes the store; later calls fail. */
  close(): Promise<{ closed: true }> {
    return this.serial(async () => {
      this.closed = true;
      this.storeWatch?.close();
      await this.flushUses();
      await this.store?.close();
      this.store = null;
      return { closed: true as const };
    });
  }

  get currentSettings(): Settings | null {
    return this.settings;
  }
}

function unavailable(message: string): ApiReply {
  const body = { error: 'store_unavailable', message: `the database cannot be written now (${message}); keys already known keep working; try again` };
  return { status: 503, headers: { 'retry-after': '5' }, body: new TextEncoder().encode(JSON.stringify(body)), action: null };
}
