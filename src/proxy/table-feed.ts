/**
 * Takes the control plane's ordered stream of messages into a KeyTable: a
 * delta at once, a whole table one slice per turn of the event loop (so that
 * building 100,000 keys never holds the serving thread for long) and then
 * swapped in whole. Messages after a table wait until it is in place, so
 * whatever follows an update (a call's answer, an acknowledgement) is taken
 * only once the update is enforced.
 */
import type { FeedPosition, SnapshotGroup, SnapshotKey } from '../store/types.ts';
import { KeyTable, TableBuilder, type SnapshotDelta } from './snapshot.ts';

/** A whole table: the keys as JSON arrays of SnapshotKey, in slices. */
export interface TableMessage {
  t: 'table';
  position: FeedPosition;
  groups: SnapshotGroup[];
  slices: Uint8Array[];
}

export type DeltaMessage = { t: 'delta' } & SnapshotDelta;

export type TableUpdate = TableMessage | DeltaMessage;

export class TableFeed<M extends { t: string }> {
  private readonly inbox: Array<M | TableUpdate> = [];
  private building: { builder: TableBuilder; slices: Uint8Array[]; next: number; message: TableMessage } | null = null;
  private draining = false;
  private readonly decoder = new TextDecoder();

  constructor(
    readonly table: KeyTable,
    /**
     * Every other message, in order, once the updates before it are applied.
     * Returns true to let pending promise reactions run before the next message
     * is taken (after a call's answer, so that its awaiter acts before any later update).
     */
    private readonly other: (m: M) => boolean | void,
    /** Each update, once applied here. */
    private readonly applied: (m: TableUpdate) => void = () => undefined,
  ) {}

  push(m: M | TableUpdate): void {
    this.inbox.push(m);
    if (!this.draining) this.drain();
  }

  private drain(): void {
    this.draining = true;
    while (this.building === null && this.inbox.length > 0) {
      if (this.take(this.inbox.shift() as M | TableUpdate)) {
        setImmediate(() => this.drain());
        return;
      }
    }
    if (this.building !== null) {
      const b = this.building;
      const slice = b.slices[b.next++];
      if (slice !== undefined) b.builder.addKeys(JSON.parse(this.decoder.decode(slice)) as SnapshotKey[]);
      if (b.next >= b.slices.length) {
        this.table.swap(b.builder);
        this.building = null;
        this.applied(b.message);
      }
      setImmediate(() => this.drain());
      return;
    }
    this.draining = false;
  }

  /** Takes one message; true when the rest must wait for the next turn of the event loop. */
  private take(m: M | TableUpdate): boolean {
    if (m.t === 'table') {
      const t = m as TableMessage;
      this.building = { builder: new TableBuilder(t.position, t.groups), slices: t.slices, next: 0, message: t };
      return false;
    }
    if (m.t === 'delta') {
      const d = m as DeltaMessage;
      this.table.apply(d);
      this.applied(d);
      return false;
    }
    return this.other(m as M) === true;
  }
}
