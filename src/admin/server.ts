import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createTlsServer, type Server as TlsServer } from 'node:https';
import type { Duplex } from 'node:stream';
import { secureOptions, type TlsMaterial } from '../tls.ts';
import type { Logger } from 'pino';
import { boundAddress, listenOn } from '../listen.ts';
import type { Metrics } from './metrics.ts';
import { isUiPath, serveUi } from './static.ts';

/** A handler for paths below /api (the management API); returns false when it does not own the path. */
export type ApiHandler = (req: IncomingMessage, res: ServerResponse, url: URL) => boolean | Promise<boolean>;

export interface AdminOptions {
  metrics: Metrics;
  /** The text of /metrics (default: `metrics`' registry alone). */
  metricsText?: () => Promise<string>;
  logger: Logger;
  ready: () => boolean;
  status: () => object;
  api?: ApiHandler;
  /** Serve HTTPS with this certificate and key (renewed later with `setTls`). */
  tls?: TlsMaterial | null;
}

export function sendJson(res: ServerResponse, status: number, value: unknown, extra: Record<string, string> = {}): void {
  const body = JSON.stringify(value);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    ...extra,
  });
  res.end(body);
}

/** The admin listener: /healthz, /readyz, /status, /metrics, the management API and the admin page at /. */
export class AdminServer {
  readonly server: Server | TlsServer;
  private readonly log: Logger;

  constructor(private readonly opts: AdminOptions) {
    this.log = opts.logger.child({ component: 'admin' });
    const handler = (req: IncomingMessage, res: ServerResponse): void => {
      void this.handle(req, res).catch((err: unknown) => {
        this.log.error({ err: { message: (err as Error).message } }, 'admin request failed');
        if (!res.headersSent) sendJson(res, 500, { error: 'internal_error', message: 'internal error' });
        else res.destroy();
      });
    };
    const httpOptions = { headersTimeout: 15_000, requestTimeout: 60_000, connectionsCheckingInterval: 1_000 };
    this.server = opts.tls != null ? createTlsServer({ ...httpOptions, ...secureOptions(opts.tls) }, handler) : createServer(httpOptions, handler);
    this.server.on('tlsClientError', (_err: Error, socket: Duplex) => socket.destroy());
    // `Expect: 100-continue`: no 100 before the caller is known; the management API sends it once the
    // admin key is checked, and every other answer closes the connection instead of reading a body.
    this.server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
      (req as IncomingMessage & { expectsContinue?: boolean }).expectsContinue = true;
      handler(req, res);
    });
  }

  /** Puts a renewed certificate in place: new connections get it, open ones keep theirs. */
  setTls(m: TlsMaterial): void {
    if ('setSecureContext' in this.server) this.server.setSecureContext(secureOptions(m));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://admin');
    if ((req as IncomingMessage & { expectsContinue?: boolean }).expectsContinue === true && !url.pathname.startsWith('/api/')) res.shouldKeepAlive = false;
    const method = req.method ?? 'GET';
    const readOnly = method === 'GET' || method === 'HEAD';
    switch (url.pathname) {
      case '/healthz':
        if (!readOnly) return sendJson(res, 405, { error: 'method_not_allowed', message: 'use GET' }, { allow: 'GET, HEAD' });
        return sendJson(res, 200, { status: 'ok' });
      case '/readyz':
        if (!readOnly) return sendJson(res, 405, { error: 'method_not_allowed', message: 'use GET' }, { allow: 'GET, HEAD' });
        return this.opts.ready()
          ? sendJson(res, 200, { status: 'ready' })
          : sendJson(res, 503, { status: 'not_ready', message: 'no configuration has been applied yet' });
      case '/status':
        if (!readOnly) return sendJson(res, 405, { error: 'method_not_allowed', message: 'use GET' }, { allow: 'GET, HEAD' });
        return sendJson(res, 200, this.opts.status());
      case '/metrics': {
        if (!readOnly) return sendJson(res, 405, { error: 'method_not_allowed', message: 'use GET' }, { allow: 'GET, HEAD' });
        const text = await (this.opts.metricsText?.() ?? this.opts.metrics.registry.metrics());
        res.writeHead(200, { 'content-type': this.opts.metrics.registry.contentType, 'content-length': Buffer.byteLength(text) });
        res.end(text);
        return;
      }
    }
    if (isUiPath(url.pathname)) {
      if (!readOnly) return sendJson(res, 405, { error: 'method_not_allowed', message: 'use GET' }, { allow: 'GET, HEAD' });
      return serveUi(res, url.pathname, method === 'HEAD');
    }
    if (url.pathname.startsWith('/api/') && this.opts.api !== undefined) {
      if (await this.opts.api(req, res, url)) return;
    }
    sendJson(res, 404, { error: 'not_found', message: `no admin endpoint at ${url.pathname}` });
  }

  listen(host: string, port: number): Promise<void> {
    return listenOn(this.server, host, port);
  }

  address(): { host: string; port: number } {
    return boundAddress(this.server, 'admin');
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}
