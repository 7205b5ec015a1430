import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { Dispatcher } from 'undici';
import { downstreamResponseHeaders } from './headers.ts';

export type ForwardOutcome =
  | { kind: 'done'; status: number }
  | { kind: 'upstream_error'; status: 502 | 504; code: 'bad_gateway' | 'gateway_timeout'; err: Error }
  | { kind: 'aborted'; status: number };

/** Told once how a forwarded request ended; `ctx` is what the caller passed to `forward`. */
export type ForwardDone<C> = (ctx: C, outcome: ForwardOutcome) => void;

const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT']);

/** How an upstream error maps to keygate's answer: timeouts are 504, everything else 502. */
export function upstreamFailure(err: Error & { code?: string }): { status: 502 | 504; code: 'bad_gateway' | 'gateway_timeout' } {
  return TIMEOUT_CODES.has(err.code ?? '') ? { status: 504, code: 'gateway_timeout' } : { status: 502, code: 'bad_gateway' };
}

/** What the response's event listeners call on its handler (shared listeners: no closure per request). */
interface ClientSide {
  clientClosed(): void;
  drained(): void;
}

type ForwardedResponse = ServerResponse & { keygateForwarding?: ClientSide };

/**
 * undici's dispatch handler for one request, on its controller-based API. A
 * class, so that the request path allocates one small object instead of a
 * handler literal and its closures (the proxy's hot path; bench/RESULTS.md).
 */
class Forwarding<C> implements Dispatcher.DispatchHandler, ClientSide {
  private controller: Dispatcher.DispatchController | null = null;
  private finished = false;
  private clientGone = false;

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
    this.controller?.abort(new Error('client closed the connection'));
    this.finish({ kind: 'aborted', status: this.res.headersSent ? this.res.statusCode : 499 });
  }

  /** The client drained what we wrote: let undici read the upstream again. */
  drained(): void {
    this.controller?.resume();
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.clientGone) controller.abort(new Error('client closed the connection'));
  }

  onResponseStart(_controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders, statusMessage?: string): void {
    if (statusCode < 200) return; // 1xx: keygate answers Expect: 100-continue itself.
    // undici parsed the raw headers into this object already (lower-cased, interned names): no second pass over the Buffers.
    this.res.writeHead(statusCode, statusMessage, downstreamResponseHeaders(headers, this.via));
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    // Backpressure: undici stops reading the upstream until the client has drained.
    if (!this.res.write(chunk)) {
      controller.pause();
      this.res.once('drain', onResponseDrain);
    }
  }

  onResponseEnd(): void {
    this.res.end();
    this.finish({ kind: 'done', status: this.res.statusCode });
  }

  onResponseError(_controller: Dispatcher.DispatchController | undefined, err: Error & { code?: string }): void {
    if (this.clientGone) return;
    this.finish({ kind: 'upstream_error', ...upstreamFailure(err), err });
  }
}

function onResponseClose(this: ForwardedResponse): void {
  this.keygateForwarding?.clientClosed();
}

function onResponseDrain(this: ForwardedResponse): void {
  this.keygateForwarding?.drained();
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
  (res as ForwardedResponse).keygateForwarding = handler;
  res.once('close', onResponseClose);
  try {
    dispatcher.dispatch(
      { path, method: req.method ?? 'GET', headers, body: hasBody ? req : null, headersTimeout: timeoutMs, bodyTimeout: timeoutMs },
      handler,
    );
  } catch (err) {
    handler.onResponseError(undefined, err as Error);
  }
}
