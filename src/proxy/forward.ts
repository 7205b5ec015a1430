import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Dispatcher } from 'undici';
import { downstreamResponseHeaders } from './headers.ts';

export type ForwardOutcome =
  | { kind: 'done'; status: number }
  | { kind: 'upstream_error'; status: 502 | 504; code: 'bad_gateway' | 'gateway_timeout'; err: Error }
  | { kind: 'aborted'; status: number };

/** Told once how a forwarded request ended; `ctx` is what the caller passed to `forward`. */
export type ForwardDone<C> = (ctx: C, outcome: ForwardOutcome) => void;

const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT']);

/**
 * undici's raw dispatch handler for one request. A class, so that the request
 * path allocates one small object instead of a handler literal and its
 * closures (the proxy's hot path; bench/RESULTS.md).
 */
class Forwarding<C> {
  private abortUpstream: ((err?: Error) => void) | null = null;
  private finished = false;
  private clientGone = false;
  private resume: (() => void) | null = null;

  constructor(
    private readonly res: ServerResponse,
    private readonly via: string,
    private readonly ctx: C,
    private readonly done: ForwardDone<C>,
  ) {}

  private finish(o: ForwardOutcome): void {
    if (this.finished) return;
    this.finished = true;
    this.done(this.ctx, o);
  }

  /** The client went away before its answer was complete: abort the upstream request. */
  clientClosed(): void {
    if (this.res.writableFinished) return;
    this.clientGone = true;
    this.abortUpstream?.(new Error('client closed the connection'));
    this.finish({ kind: 'aborted', status: this.res.headersSent ? this.res.statusCode : 499 });
  }

  onConnect(abort: (err?: Error) => void): void {
    this.abortUpstream = abort;
    if (this.clientGone) abort(new Error('client closed the connection'));
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void, statusText: string): boolean {
    if (statusCode < 200) return true; // 1xx: Node sends its own 100-continue.
    this.res.writeHead(statusCode, statusText, downstreamResponseHeaders(rawHeaders, this.via));
    this.resume = resume;
    return true;
  }

  onData(chunk: Buffer): boolean {
    const more = this.res.write(chunk);
    // Backpressure: undici pauses the upstream until the client has drained.
    if (!more && this.resume !== null) this.res.once('drain', this.resume);
    return more;
  }

  onComplete(): void {
    this.res.end();
    this.finish({ kind: 'done', status: this.res.statusCode });
  }

  onError(err: Error & { code?: string }): void {
    if (this.clientGone) return;
    const timeout = TIMEOUT_CODES.has(err.code ?? '');
    this.finish({ kind: 'upstream_error', status: timeout ? 504 : 502, code: timeout ? 'gateway_timeout' : 'bad_gateway', err });
  }

  onUpgrade(): void {
    // Upgrades are tunnelled by tunnel.ts, never dispatched here.
  }
}

function onResponseClose(this: ServerResponse & { keygateForwarding?: Forwarding<unknown> }): void {
  this.keygateForwarding?.clientClosed();
}

/**
 * Streams one request to the upstream through undici's dispatcher and the
 * answer back, with backpressure both ways. A client that goes away aborts
 * the upstream request. Calls `done(ctx, outcome)` exactly once.
 */
export function forward<C>(
  dispatcher: Dispatcher,
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
  headers: string[],
  hasBody: boolean,
  via: string,
  timeoutMs: number,
  ctx: C,
  done: ForwardDone<C>,
): void {
  const handler = new Forwarding(res, via, ctx, done);
  (res as ServerResponse & { keygateForwarding?: Forwarding<C> }).keygateForwarding = handler;
  res.once('close', onResponseClose);
  try {
    dispatcher.dispatch(
      { path, method: req.method ?? 'GET', headers, body: hasBody ? req : null, headersTimeout: timeoutMs, bodyTimeout: timeoutMs },
      handler as unknown as Dispatcher.DispatchHandler,
    );
  } catch (err) {
    handler.onError(err as Error);
  }
}
