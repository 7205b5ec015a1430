import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Dispatcher } from 'undici';
import { downstreamResponseHeaders } from './headers.ts';

export type ForwardOutcome =
  | { kind: 'done'; status: number }
  | { kind: 'upstream_error'; status: 502 | 504; code: 'bad_gateway' | 'gateway_timeout'; err: Error }
  | { kind: 'aborted'; status: number };

const TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT']);

/**
 * Streams one request to the upstream through undici's dispatcher and the
 * answer back, with backpressure both ways. A client that goes away aborts
 * the upstream request. Calls `done` exactly once.
 */
export function forward(
  dispatcher: Dispatcher,
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
  headers: string[],
  hasBody: boolean,
  via: string,
  timeoutMs: number,
  done: (outcome: ForwardOutcome) => void,
): void {
  let abort: ((err?: Error) => void) | null = null;
  let finished = false;
  let clientGone = false;
  const finish = (o: ForwardOutcome): void => {
    if (finished) return;
    finished = true;
    done(o);
  };
  res.once('close', () => {
    if (!res.writableFinished) {
      clientGone = true;
      abort?.(new Error('client closed the connection'));
      finish({ kind: 'aborted', status: res.headersSent ? res.statusCode : 499 });
    }
  });
  const handler = {
    onConnect(a: (err?: Error) => void): void {
      abort = a;
      if (clientGone) a(new Error('client closed the connection'));
    },
    onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void, statusText: string): boolean {
      if (statusCode < 200) return true; // 1xx: Node sends its own 100-continue.
      res.writeHead(statusCode, statusText, downstreamResponseHeaders(rawHeaders, via));
      res.on('drain', resume);
      return true;
    },
    onData(chunk: Buffer): boolean {
      return res.write(chunk);
    },
    onComplete(): void {
      res.end();
      finish({ kind: 'done', status: res.statusCode });
    },
    onError(err: Error & { code?: string }): void {
      if (clientGone) return;
      const timeout = TIMEOUT_CODES.has(err.code ?? '');
      finish({
        kind: 'upstream_error',
        status: timeout ? 504 : 502,
        code: timeout ? 'gateway_timeout' : 'bad_gateway',
        err,
      });
    },
    onUpgrade(): void {
      // Upgrades are tunnelled by tunnel.ts, never dispatched here.
    },
  };
  try {
    dispatcher.dispatch(
      {
        path,
        method: req.method ?? 'GET',
        headers,
        body: hasBody ? req : null,
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      },
      handler as unknown as Dispatcher.DispatchHandler,
    );
  } catch (err) {
    handler.onError(err as Error);
  }
}
