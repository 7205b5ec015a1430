/**
 * Baseline 3: the fastest honest bare proxy we could write on undici, with no
 * authentication at all. One undici Pool (keep-alive, same pool settings as
 * keygate), requests dispatched with a handler on undici's controller-based API,
 * the one keygate uses (the lowest-overhead undici API: no Readable, no promise
 * per request; `pool.stream` and `pool.request` were measured too and were
 * slower, see bench/RESULTS.md), bodies streamed
 * both ways with backpressure, hop-by-hop headers dropped both ways, a client
 * that goes away aborts the upstream request, upstream failure → 502.
 *
 *   node --import tsx bench/proxy-servers/bare-undici.ts PORT UPSTREAM_URL [dispatch|stream|request]
 */
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
import { pipeline } from 'node:stream';
import { Pool, type Dispatcher } from 'undici';

const port = Number(process.argv[2] ?? 0);
const upstream = new URL(process.argv[3] ?? 'http://127.0.0.1:3000');
const mode = process.argv[4] ?? 'dispatch';

const pool = new Pool(upstream.origin, { connections: 256, pipelining: 1, keepAliveTimeout: 4_000 });

const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade']);

function requestHeaders(raw: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    if (HOP.has(name.toLowerCase())) continue;
    out.push(name, raw[i + 1] as string);
  }
  return out;
}

function responseHeaders(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const name in headers) {
    if (HOP.has(name)) continue;
    const v = headers[name];
    if (v !== undefined) out[name] = v;
  }
  return out;
}

function hasBody(req: IncomingMessage): boolean {
  return req.headers['transfer-encoding'] !== undefined || (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0');
}

function fail(res: ServerResponse): void {
  if (res.headersSent) res.destroy();
  else {
    res.writeHead(502, { 'content-type': 'application/json' });
    res.end('{"error":"bad_gateway"}');
  }
}

/** undici's controller-based dispatch handler (the API keygate uses), one small object per request. */
class Forward implements Dispatcher.DispatchHandler {
  private controller: Dispatcher.DispatchController | null = null;
  gone = false;

  constructor(private readonly res: ServerResponse) {}

  abort(): void {
    this.gone = true;
    this.controller?.abort(new Error('client closed'));
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.gone) controller.abort(new Error('client closed'));
  }

  onResponseStart(_c: Dispatcher.DispatchController, status: number, headers: IncomingHttpHeaders, text?: string): void {
    if (status < 200) return;
    this.res.writeHead(status, text, responseHeaders(headers));
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.res.write(chunk)) {
      controller.pause();
      this.res.once('drain', () => controller.resume());
    }
  }

  onResponseEnd(): void {
    this.res.end();
  }

  onResponseError(): void {
    if (!this.gone) fail(this.res);
  }
}

function viaDispatch(req: IncomingMessage, res: ServerResponse): void {
  const handler = new Forward(res);
  res.once('close', () => {
    if (!res.writableFinished) handler.abort();
  });
  pool.dispatch({ path: req.url ?? '/', method: req.method ?? 'GET', headers: requestHeaders(req.rawHeaders), body: hasBody(req) ? req : null }, handler);
}

function viaStream(req: IncomingMessage, res: ServerResponse): void {
  const ac = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) ac.abort();
  });
  pool
    .stream(
      { path: req.url ?? '/', method: req.method ?? 'GET', headers: requestHeaders(req.rawHeaders), body: hasBody(req) ? req : null, signal: ac.signal },
      ({ statusCode, headers }) => {
        const h: Record<string, string | string[]> = {};
        for (const [k, v] of Object.entries(headers)) if (!HOP.has(k) && v !== undefined) h[k] = v;
        res.writeHead(statusCode, h);
        return res;
      },
    )
    .catch(() => {
      if (!ac.signal.aborted) fail(res);
    });
}

function viaRequest(req: IncomingMessage, res: ServerResponse): void {
  const ac = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) ac.abort();
  });
  pool
    .request({ path: req.url ?? '/', method: req.method ?? 'GET', headers: requestHeaders(req.rawHeaders), body: hasBody(req) ? req : null, signal: ac.signal })
    .then(({ statusCode, headers, body }) => {
      const h: Record<string, string | string[]> = {};
      for (const [k, v] of Object.entries(headers)) if (!HOP.has(k) && v !== undefined) h[k] = v;
      res.writeHead(statusCode, h);
      pipeline(body, res, () => undefined);
    })
    .catch(() => {
      if (!ac.signal.aborted) fail(res);
    });
}

const handle = mode === 'stream' ? viaStream : mode === 'request' ? viaRequest : viaDispatch;
const server = createServer({ keepAliveTimeout: 5_000, requestTimeout: 0 }, handle);
server.listen(port, '127.0.0.1', () => {
  const a = server.address();
  process.stdout.write(`ready ${typeof a === 'object' && a !== null ? a.port : port}\n`);
});
process.on('SIGTERM', () => {
  server.close(() => void pool.close().finally(() => process.exit(0)));
  server.closeAllConnections();
});
