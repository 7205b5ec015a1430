import pino, { type Logger } from 'pino';

/** One request line: fixed fields, none of them secret (no query string, no headers, never the key). */
export interface AccessEntry {
  method: string;
  /** The path without its query string: a query may carry secrets. */
  path: string;
  status: number;
  outcome: string;
  durationMs: number;
  keyId: number | undefined;
  keyName: string | undefined;
  peer: string | undefined;
  /** Epoch milliseconds when the request finished. */
  time: number;
}

const INFO = 30;
const ERROR = 50;
/** How long a line may wait in the queue. */
export const FLUSH_MS = 50;
const MAX_PENDING = 512;

/**
 * The per-request log, buffered the way nginx's `access_log … buffer= flush=`
 * is: `record` only queues the entry; the queue is turned into pino-format
 * JSON lines at most FLUSH_MS after its first entry (or once it holds
 * MAX_PENDING entries, and at shutdown) and handed to the logger's
 * destination in one write. Serialising a batch in one tight loop, and one
 * write per batch instead of one per line, costs a fraction of a pino call
 * per request (bench/RESULTS.md, "Proxy: where keygate's time goes").
 *
 * The lines are exactly what `logger.info(fields, 'request')` would print
 * (same level numbers, bindings, ISO time and message key); 5xx at error
 * level, everything else at info. Nothing here passes pino's redaction:
 * the fields are fixed and carry no secret by construction.
 */
export class AccessLog {
  private pending: AccessEntry[] = [];
  private timer: NodeJS.Timeout | null = null;
  /** Set at shutdown: from then on every line is written as it comes (nothing may wait for a timer). */
  private unbuffered = false;
  private readonly head: string;
  private readonly stream: { write(s: string): unknown };
  private readonly infoOn: boolean;
  private readonly errorOn: boolean;
  private readonly flushSoon = (): void => this.flush();

  constructor(logger: Logger) {
    const l = logger as unknown as Record<symbol, unknown>;
    this.head = String(l[pino.symbols.chindingsSym] ?? '');
    this.stream = l[pino.symbols.streamSym] as { write(s: string): unknown };
    this.infoOn = logger.isLevelEnabled('info');
    this.errorOn = logger.isLevelEnabled('error');
  }

  record(e: AccessEntry): void {
    if (!(e.status >= 500 ? this.errorOn : this.infoOn)) return;
    if (this.pending.push(e) >= MAX_PENDING || this.unbuffered) this.flush();
    else if (this.timer === null) this.timer = setTimeout(this.flushSoon, FLUSH_MS).unref();
  }

  /** Writes what is queued and every later line at once: called when the proxy starts shutting down. */
  stopBuffering(): void {
    this.unbuffered = true;
    this.flush();
  }

  /** Writes every queued line now. */
  flush(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    const batch = this.pending;
    if (batch.length === 0) return;
    this.pending = [];
    let out = '';
    let lastTime = -1;
    let stamp = '';
    for (const e of batch) {
      if (e.time !== lastTime) {
        lastTime = e.time;
        stamp = new Date(e.time).toISOString();
      }
      out += `{"level":${e.status >= 500 ? ERROR : INFO},"time":"${stamp}"${this.head},"method":${JSON.stringify(e.method)},"path":${JSON.stringify(e.path)},"status":${e.status},"outcome":"${e.outcome}","duration_ms":${e.durationMs}`;
      if (e.keyId !== undefined) out += `,"key_id":${e.keyId},"key_name":${JSON.stringify(e.keyName)}`;
      if (e.peer !== undefined) out += `,"peer":${JSON.stringify(e.peer)}`;
      out += ',"msg":"request"}\n';
    }
    this.stream.write(out);
  }
}
