/**
 * What the control plane and the serving side say to each other. The control
 * plane (a worker thread) owns the store and every write; the serving side
 * sends it calls and receives, in one ordered stream: table updates (whole
 * tables in slices, or deltas), call replies, and log lines. A reply comes
 * after the table update its write caused, so an answered write is already
 * enforced.
 */
import type { Diagnostic } from '../errors.ts';
import type { Settings } from '../config/types.ts';
import type { PlanSummary } from '../reconcile/diff.ts';
import type { FeedPosition, RevisionRow, StoreInfo } from '../store/types.ts';
import type { TableMessage, TableUpdate } from '../proxy/table-feed.ts';

/** Keys per message of a whole table: small enough that building one slice never holds the serving thread long. */
export const TABLE_SLICE_KEYS = 2_000;

export interface StartArgs {
  file: string;
  dbFlag: string | undefined;
  env: NodeJS.ProcessEnv;
  cwd: string;
  /** Resume after a restart of the control plane: no apply; the same store, followed from this position. */
  resume: { location: string; position: FeedPosition | null } | null;
  /** How often the store's feed position is polled for writes made elsewhere. */
  feedPollMs: number;
}

export interface ReconcileArgs {
  /** Skip the work when the file's SHA-256 equals this (the applied one). */
  skipIfSha256: string | null;
  allowDeletes?: boolean;
}

export type ReconcileOutcome =
  | { kind: 'unchanged'; sha256: string }
  | {
      kind: 'applied';
      sha256: string;
      settings: Settings;
      summary: PlanSummary;
      changed: string[];
      /** The store's latest revision (this apply's, or the one that already matched). */
      revision: RevisionRow | null;
      warnings: string[];
    }
  | {
      kind: 'failed';
      sha256: string | null;
      code: string;
      error: string;
      errors: string[];
      /** Worth trying again without a new edit (the store was busy or unreachable, the file unreadable). */
      retryable: boolean;
    };

export type StartResult =
  | { kind: 'invalid'; diagnostics: Diagnostic[] }
  | { kind: 'failed'; code: string; error: string }
  | {
      kind: 'started';
      /** Safe to show (no password). */
      store: StoreInfo;
      /** The location as found, password included: only ever handed back in `resume`, never shown. */
      location: string;
      outcome: ReconcileOutcome | null;
    };

/** A management API request, as the serving side hands it over (authenticated already). */
export interface ApiArgs {
  route: string;
  params: string[];
  /** The request body as text (bounded by the serving side), or null when the route takes none. */
  body: string | null;
  /** The query string, without its `?` (paging of the group list). */
  query?: string;
  actor: { id: number; name: string };
}

export interface ApiReply {
  status: number;
  headers: Record<string, string>;
  /** The JSON body as UTF-8 (transferred, not copied), or null for 204. */
  body: Uint8Array | null;
  /** The management change made, for the metrics. */
  action: string | null;
}

export interface ControlCalls {
  start(a: StartArgs): StartResult;
  reconcile(a: ReconcileArgs): ReconcileOutcome;
  api(a: ApiArgs): ApiReply;
  /** Key uses seen by the serving side since its last batch: [key id, epoch ms] pairs. */
  lastUsed(a: { uses: Array<[number, number]> }): { written: number };
  /** A whole table as the store holds it now, as the answer (not published). */
  table(a: Record<string, never>): TableMessage;
  /** Writes what is pending and closes the store. */
  close(a: Record<string, never>): { closed: true };
}

export type CallName = keyof ControlCalls;

export type ToControl = { t: 'call'; id: number; name: CallName; args: unknown };

export type StoreHealth = { reachable: true } | { reachable: false; error: string };

export type FromControl =
  /**
   * A whole table (TABLE_SLICE_KEYS keys a slice, in buffers handed over rather
   * than copied; the serving side builds one slice per turn of its event loop,
   * then swaps the table in whole), or a delta.
   */
  | TableUpdate
  | { t: 'reply'; id: number; ok: true; value: unknown }
  | { t: 'reply'; id: number; ok: false; error: { code: string; message: string } }
  | { t: 'log'; level: 'debug' | 'info' | 'warn' | 'error'; component: string; fields: Record<string, unknown>; msg: string }
  | { t: 'store'; health: StoreHealth }
  | { t: 'heap'; bytes: number };
