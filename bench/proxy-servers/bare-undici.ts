/**
 * Baseline 3: the fastest honest bare proxy we could write on undici, with no
 * authentication at all. One undici Pool (keep-alive, same pool settings as
 * keygate), requests dispatched with a raw handler (the lowest-overhead undici
 * API: no Readable, no promise per request; `pool.stream` and `pool.request`
 * were measured too and were slower, see bench/RESULTS.md), bodies streamed
 * both ways with backpressure, hop-by-hop headers dropped both ways, a client
 * that goes away aborts the upstream request, upstream failure → 502.
 *
 *   node --import tsx bench/proxy-servers/bare-undici.ts PORT UPSTREAM_URL [dispatch|stream|request]
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
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

function responseHeaders(raw: Buffer[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = (raw[i] as Buffer).toString('latin1');
    if (HOP.has(name.toLowerCase())) continue;
    out.push(name, (raw[i + 1] as Buffer).toString('latin1'));
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

function viaDispatch(req: IncomingMessage, res: ServerResponse): void {
  let abort: ((err?: Error) => void) | null = null;
  let gone = false;
  // mode "dispatch-end": the first body chunk is held back, so that a one-chunk
  // body goes out with res.end(chunk) (one write path through Node's http instead of two).
  let held: Buffer | null = null;
  let holdFirst = mode === 'dispatch-end';
  res.once('close', () => {
    if (!res.writableFinished) {
      gone = true;
      abort?.(new Error('client closed'));
    }
  });
  const handler = {
    onConnect(a: (err?: Error) => void) {
      abort = a;
      if (gone) a(new Error('client closed'));
    },
    onHeaders(status: number, raw: Buffer[], resume: () => void, text: string) {
      if (status < 200) return true;
      res.writeHead(status, text, responseHeaders(raw));
      res.on('drain', resume);
      return true;
    },
    onData(chunk: Buffer) {
      if (holdFirst) {
        if (held === null) {
          held = chunk;
          return true;
        }
        res.write(held);
        held = null;
        holdFirst = false;
      }
      return res.write(chunk);
    },
    onComplete() {
      if (held !== null) res.end(held);
      else res.end();
    },
    onError() {
      held = null;
      if (!gone) fail(res);
    },
    onUpgrade() {},
  };
  pool.dispatch(
    { path: req.url ?? '/', method: req.method ?? 'GET', headers: requestHeaders(req.rawHeaders), body: hasBody(req) ? req : null },
    handler as unknown as Dispatcher.DispatchHandler,
  );
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
