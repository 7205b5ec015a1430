import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createTlsServer, type Server as TlsServer } from 'node:https';
import { secureOptions, type TlsMaterial } from '../tls.ts';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { boundAddress, listenOn } from '../listen.ts';
import { Pool } from 'undici';
import { normalizeTarget } from '../rules/path.ts';
import { rulesAllow } from '../rules/match.ts';
import { AccessLog } from './access-log.ts';
import { authenticateOn, type AuthFailure, type ConnectionAuth } from './auth.ts';
import { forward, type ForwardOutcome } from './forward.ts';
import { isTrusted, readRequestHead, trustedProxyList, upstreamHeaders, type RequestHead } from './headers.ts';
import { sendError, type ErrorCode } from './respond.ts';
import { identityOf, type KeySnapshot, type Principal } from './snapshot.ts';
import { FailedAuthThrottle } from './throttle.ts';
import { LINGER_MS, SocketSet } from './sockets.ts';
import { isTunnelledUpgrade, plainRequestHead, rawClientError, rawError, tunnel } from './tunnel.ts';

/**
 * The request target as logged: the path only. The query string may carry secrets, and so may the
 * authority of an absolute-form target (`http://user:password@host/…`, refused with 400).
 */
export function loggedPath(url: string): string {
  const q = url.indexOf('?');
  const p = q === -1 ? url : url.slice(0, q);
  if (p.startsWith('/')) return p;
  const scheme = p.indexOf('://');
  if (scheme === -1) return p === '*' ? '*' : '(not a path)';
  const slash = p.indexOf('/', scheme + 3);
  return slash === -1 ? '/' : p.slice(slash);
}

function noop(): void {}

/**
 * A refused request's body is read and dropped so that the connection can be reused; a body that
 * has not arrived `LINGER_MS` later (a client announcing one and never sending it) closes the
 * connection, so that no client without a key can hold a socket that way.
 */
function drainRefusedBody(req: IncomingMessage): void {
  req.resume();
  const timer = setTimeout(() => {
    if (!req.complete) req.socket.destroy();
  }, LINGER_MS);
  timer.unref();
  req.once('end', () => clearTimeout(timer));
  req.once('close', () => clearTimeout(timer));
}

export type Outcome =
  | 'forwarded'
  | 'unauthenticated'
  | 'forbidden'
  | 'throttled'
  | 'bad_request'
  | 'upstream_error'
  | 'loop'
  | 'client_closed';

/** What the proxy reports; implemented with prom-client by the admin side. */
export interface ProxyMetrics {
  request(outcome: Outcome, status: number): void;
  authFailure(reason: AuthFailure | 'throttled'): void;
  upstreamSeconds(seconds: number): void;
}

export interface ProxyConfig {
  upstream: URL;
  keyHeader: string;
  forwardKey: boolean;
  trustedProxies: readonly string[];
  upstreamTimeoutMs: number;
  failedAuthPerMinute: number;
}

export interface ProxyOptions {
  config: ProxyConfig;
  snapshot: () => KeySnapshot;
  logger: Logger;
  metrics: ProxyMetrics;
  /** Records that a key was used (batched to the database elsewhere). */
  touch: (keyId: number, nowMs: number) => void;
  /** Serve HTTPS with this certificate and key (renewed later with `setTls`). */
  tls?: TlsMaterial | null;
}

const FAILURE_STATUS: Record<AuthFailure, [number, ErrorCode]> = {
  missing: [401, 'missing_api_key'],
  invalid: [401, 'invalid_api_key'],
  expired: [401, 'invalid_api_key'],
  disabled: [401, 'invalid_api_key'],
  duplicate: [400, 'duplicate_api_key'],
};

interface Forwarded {
  req: IncomingMessage;
  res: ServerResponse;
  principal: Principal;
  start: number;
}

/** A connection's last admitted request line, and what it was admitted as (see `check`). */
interface RouteMemo {
  url: string;
  method: string;
  principal: Principal;
  /** A group's rules can change under the same principal (its entry is shared and updated in place); a key's cannot. */
  groupRules: Principal['groupRules'];
  basePath: string;
  target: string;
}

/** What keygate adds to a connection's requests, as last built (see `headersFor`). */
interface HeaderTail {
  identity: readonly string[];
  host: string | undefined;
  via: string | undefined;
  tail: readonly string[];
}

type Checked =
  | { ok: true; principal: Principal; target: string }
  | { ok: false; status: number; code: ErrorCode; outcome: Outcome; principal: Principal | null; extra?: Record<string, string> };

export class ProxyServer {
  readonly server: Server | TlsServer;
  readonly via: string;
  /** `https` when this listener speaks TLS: what `x-forwarded-proto` and `Forwarded` say. */
  readonly proto: 'http' | 'https';
  private pool: Pool;
  private config: ProxyConfig;
  private basePath: string;
  private throttle: FailedAuthThrottle;
  private trusted;
  /** Changes when the trusted-proxy list does (a reload): what connections remember of it is stale then. */
  private trustGen = 0;
  private readonly log: Logger;
  /** One line per request, buffered and written in batches (access-log.ts). */
  private readonly accessLog: AccessLog;
  private readonly sweepTimer: NodeJS.Timeout;
  /**
   * Every socket Node handed over with an 'upgrade' event (Node's own connection tracking lets go
   * of them) and every upstream socket of a WebSocket tunnel, until it closes: what shutdown must
   * close when the grace period ends.
   */
  private readonly upgraded = new SocketSet();
  private closing = false;

  constructor(private readonly opts: ProxyOptions) {
    this.config = opts.config;
    this.via = `1.1 keygate-${randomBytes(4).toString('hex')}`;
    this.log = opts.logger.child({ component: 'proxy' });
    this.accessLog = new AccessLog(this.log);
    this.pool = this.makePool(opts.config);
    this.basePath = opts.config.upstream.pathname.replace(/\/+$/, '');
    this.throttle = new FailedAuthThrottle(opts.config.failedAuthPerMinute);
    this.trusted = trustedProxyList(opts.config.trustedProxies);
    // headersTimeout is checked every connectionsCheckingInterval (Node's default, 30 s, would let a
    // slow-header client hold its connection up to 45 s): a request head still incomplete after
    // 15 s is answered 408 within 16 s.
    const httpOptions = { headersTimeout: 15_000, requestTimeout: 0, keepAliveTimeout: 5_000, connectionsCheckingInterval: 1_000 };
    const handler = (req: IncomingMessage, res: ServerResponse): void => this.onRequest(req, res);
    this.proto = opts.tls != null ? 'https' : 'http';
    this.server = opts.tls != null ? createTlsServer({ ...httpOptions, ...secureOptions(opts.tls) }, handler) : createServer(httpOptions, handler);
    // A TLS handshake that fails (a plain-HTTP client, an old protocol) is the client's problem: close quietly.
    this.server.on('tlsClientError', (_err: Error, socket: Duplex) => socket.destroy());
    this.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => this.onUpgrade(req, socket, head));
    this.server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => this.onRequest(req, res, true));
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
      if (socket.writable && err.code !== 'ECONNRESET') {
        if (err.code === 'HPE_HEADER_OVERFLOW') rawClientError(socket, 431, 'headers_too_large', this.config.keyHeader);
        else if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') rawClientError(socket, 408, 'request_timeout', this.config.keyHeader);
        else rawClientError(socket, 400, 'malformed_request', this.config.keyHeader);
      } else socket.destroy();
    });
    this.sweepTimer = setInterval(() => this.throttle.sweep(Date.now()), 60_000).unref();
  }

  private makePool(config: ProxyConfig): Pool {
    return new Pool(config.upstream.origin, {
      connections: 256,
      pipelining: 1,
      keepAliveTimeout: 4_000,
      headersTimeout: config.upstreamTimeoutMs,
      bodyTimeout: config.upstreamTimeoutMs,
      connect: { timeout: Math.min(config.upstreamTimeoutMs, 10_000) },
    });
  }

  /** Takes new settings after a reload; a changed upstream gets a new pool. */
  reconfigure(config: ProxyConfig): void {
    if (config.upstream.origin !== this.config.upstream.origin) {
      const old = this.pool;
      this.pool = this.makePool(config);
      void old.close().catch(() => undefined);
    }
    if (config.failedAuthPerMinute !== this.config.failedAuthPerMinute) {
      this.throttle = new FailedAuthThrottle(config.failedAuthPerMinute);
    }
    this.trusted = trustedProxyList(config.trustedProxies);
    // Whether an open connection's peer is trusted was decided with the old list: decide again.
    this.trustGen++;
    this.basePath = config.upstream.pathname.replace(/\/+$/, '');
    this.config = config;
  }

  listen(host: string, port: number): Promise<void> {
    return listenOn(this.server, host, port);
  }

  /** Puts a renewed certificate in place: new connections get it, open ones keep theirs. */
  setTls(m: TlsMaterial): void {
    if ('setSecureContext' in this.server) this.server.setSecureContext(secureOptions(m));
  }

  address(): { host: string; port: number } {
    return boundAddress(this.server, 'proxy');
  }

  /**
   * Stops accepting, lets in-flight requests finish within `graceMs`, then closes what is left:
   * HTTP connections, WebSocket tunnels (both sockets), answered upgrade sockets still lingering,
   * and the upstream pool. Resolves once every connection is closed.
   */
  async close(graceMs: number): Promise<void> {
    this.closing = true;
    clearInterval(this.sweepTimer);
    // Requests still in flight, or cut off when the grace period ends, log after this point.
    this.accessLog.stopBuffering();
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    // Keep-alive connections become idle as their last response ends: close them as they do.
    this.server.closeIdleConnections();
    const idle = setInterval(() => this.server.closeIdleConnections(), 50);
    const timer = setTimeout(() => {
      this.server.closeAllConnections();
      // Sockets of upgrades are not among Node's connections: server.close() would wait for them forever.
      this.upgraded.destroyAll();
    }, graceMs);
    await closed;
    clearInterval(idle);
    clearTimeout(timer);
    // Every client is gone, so every upstream request has ended or been aborted: the pool closes at
    // once. Should one still hang there, it is destroyed after another grace period.
    const hung = setTimeout(() => void this.pool.destroy().catch(() => undefined), graceMs);
    await this.pool.close().catch(() => undefined);
    clearTimeout(hung);
  }

  /** Authentication, path normalisation, rules and loop check: shared by requests and upgrades. */
  private check(req: IncomingMessage, head: RequestHead, now: number): Checked {
    // A request that already passed through this proxy: the upstream points back at us.
    if (head.via !== undefined && head.via.includes(this.via)) {
      return { ok: false, status: 508, code: 'loop_detected', outcome: 'loop', principal: null };
    }
    if (head.hostRepeated) return { ok: false, status: 400, code: 'malformed_request', outcome: 'bad_request', principal: null };
    const peer = req.socket.remoteAddress ?? '';
    const wait = this.throttle.retryAfterSeconds(peer, now);
    if (wait > 0) {
      this.opts.metrics.authFailure('throttled');
      return { ok: false, status: 429, code: 'too_many_requests', outcome: 'throttled', principal: null, extra: { 'retry-after': String(wait) } };
    }
    const auth = authenticateOn(req.socket as { keygateAuth?: ConnectionAuth }, this.opts.snapshot(), head.key, now);
    if (!auth.ok) {
      this.throttle.fail(peer, now);
      this.opts.metrics.authFailure(auth.reason);
      const [status, code] = FAILURE_STATUS[auth.reason];
      return { ok: false, status, code, outcome: status === 400 ? 'bad_request' : 'unauthenticated', principal: null };
    }
    const p = auth.principal;
    const url = req.url ?? '';
    const method = req.method ?? 'GET';
    // The same request line again on a kept-alive connection, with the same key and rules: the
    // normalised path and the rules' answer are those of last time.
    const socket = req.socket as Socket & { keygateRoute?: RouteMemo };
    const r = socket.keygateRoute;
    if (r !== undefined && r.url === url && r.method === method && r.principal === p && r.groupRules === p.groupRules && r.basePath === this.basePath) {
      this.opts.touch(p.id, now);
      return { ok: true, principal: p, target: r.target };
    }
    const norm = normalizeTarget(url);
    if (!norm.ok) {
      if (norm.tooLong === true) return { ok: false, status: 414, code: 'uri_too_long', outcome: 'bad_request', principal: p };
      return { ok: false, status: 400, code: 'bad_request', outcome: 'bad_request', principal: p };
    }
    if (!rulesAllow(p.groupRules, method, norm.segments) || !rulesAllow(p.keyRules, method, norm.segments)) {
      return { ok: false, status: 403, code: 'forbidden', outcome: 'forbidden', principal: p };
    }
    this.opts.touch(p.id, now);
    const target = this.basePath + norm.path + norm.query;
    socket.keygateRoute = { url, method, principal: p, groupRules: p.groupRules, basePath: this.basePath, target };
    return { ok: true, principal: p, target };
  }

  private readHead(req: IncomingMessage): RequestHead {
    return readRequestHead(req.rawHeaders, { keyHeader: this.config.keyHeader, forwardKey: this.config.forwardKey });
  }

  /**
   * The headers sent upstream. What keygate adds (identity, x-forwarded-*, forwarded, via) depends on
   * the key, the peer, its Host and Via, and the trusted-proxy list: on a kept-alive connection from
   * a peer that is not a trusted proxy it is the same request after request, so it is built once and
   * kept on the socket (as the key check is).
   */
  private headersFor(req: IncomingMessage, head: RequestHead, p: Principal): string[] {
    const socket = req.socket as Socket & { keygateTrusted?: { gen: number; trusted: boolean }; keygateTail?: HeaderTail };
    const peer = socket.remoteAddress ?? '';
    let t = socket.keygateTrusted;
    if (t === undefined || t.gen !== this.trustGen) socket.keygateTrusted = t = { gen: this.trustGen, trusted: isTrusted(this.trusted, peer) };
    const identity = identityOf(p);
    // A trusted proxy's own x-forwarded-* and forwarded values are kept and appended to: nothing to reuse.
    if (t.trusted) return upstreamHeaders(head, identity, peer, true, this.via, this.proto);
    const out = head.forward;
    const c = socket.keygateTail;
    if (c !== undefined && c.identity === identity && c.host === head.host && c.via === head.via) {
      for (let i = 0; i < c.tail.length; i++) out.push(c.tail[i] as string);
      return out;
    }
    const start = out.length;
    upstreamHeaders(head, identity, peer, false, this.via, this.proto);
    socket.keygateTail = { identity, host: head.host, via: head.via, tail: out.slice(start) };
    return out;
  }

  /**
   * One request. `expectsContinue`: it carries `Expect: 100-continue` (Node's 'checkContinue'
   * event, which stops Node from answering 100 Continue by itself): the client is invited to send
   * its body only once the request is admitted; a refused one is answered and its connection closed,
   * since the body it announced will not come.
   */
  private onRequest(req: IncomingMessage, res: ServerResponse, expectsContinue = false): void {
    const start = performance.now();
    const now = Date.now();
    const head = this.readHead(req);
    const c = this.check(req, head, now);
    if (!c.ok) {
      const extra = expectsContinue ? { ...c.extra, connection: 'close' } : c.extra;
      sendError(res, c.status, c.code, { header: this.config.keyHeader, ...(extra ? { extra } : {}) });
      this.record(req, c.status, c.outcome, c.principal, start);
      if (!expectsContinue && head.hasBody && !req.complete) drainRefusedBody(req);
      return;
    }
    if (expectsContinue) res.writeContinue();
    const headers = this.headersFor(req, head, c.principal);
    const ctx: Forwarded = { req, res, principal: c.principal, start };
    forward(this.pool, req, res, c.target, headers, head.hasBody, this.via, this.config.upstreamTimeoutMs, ctx, this.onForwarded);
  }

  /** How a forwarded request ended: one method for all of them, so no closure per request. */
  private readonly onForwarded = (ctx: Forwarded, o: ForwardOutcome): void => {
    if (o.kind === 'upstream_error') {
      sendError(ctx.res, o.status, o.code, { header: this.config.keyHeader });
      const e = o.err as NodeJS.ErrnoException & { cause?: { message?: string; code?: string } };
      this.log.warn(
        {
          err: { message: e.message, code: e.code, ...(e.cause?.code !== undefined ? { cause: { message: e.cause.message, code: e.cause.code } } : {}) },
          upstream: this.config.upstream.origin,
          key_id: ctx.principal.id,
        },
        'upstream failed',
      );
      this.record(ctx.req, o.status, 'upstream_error', ctx.principal, ctx.start);
      return;
    }
    this.opts.metrics.upstreamSeconds((performance.now() - ctx.start) / 1000);
    this.record(ctx.req, o.status, o.kind === 'aborted' ? 'client_closed' : 'forwarded', ctx.principal, ctx.start);
  };

  /**
   * A request with `Connection: upgrade` and an `Upgrade` header: Node hands over the raw socket.
   * A WebSocket upgrade is checked like any request, then tunnelled (tunnel.ts). Any other upgrade
   * (h2c, unknown tokens) goes back to Node's HTTP server as a plain request, its upgrade headers
   * removed: it is then checked and forwarded like any other, and the upstream cannot switch
   * protocols on it.
   */
  private onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    // Node removed its own error listener: a reset must not become an uncaught exception. Once per
    // socket: a non-WebSocket upgrade goes back to the HTTP parser, and the connection's next one comes here again.
    if (!socket.listeners('error').includes(noop)) socket.on('error', noop);
    this.upgraded.add(socket);
    if (this.closing) {
      socket.destroy();
      return;
    }
    if (!isTunnelledUpgrade(req)) {
      socket.unshift(head.length > 0 ? Buffer.concat([plainRequestHead(req), head]) : plainRequestHead(req));
      // Handed back to the HTTP parser as a new connection (a TLS socket is decrypted already).
      this.server.emit(this.proto === 'https' ? 'secureConnection' : 'connection', socket);
      return;
    }
    const start = performance.now();
    const reqHead = this.readHead(req);
    const c = this.check(req, reqHead, Date.now());
    if (!c.ok) {
      rawError(socket, c.status, c.code, this.config.keyHeader, c.extra);
      this.record(req, c.status, c.outcome, c.principal, start);
      return;
    }
    const headers = this.headersFor(req, reqHead, c.principal);
    tunnel(this.pool, socket, head, c.target, headers, this.config.upstreamTimeoutMs, this.via, this.config.keyHeader, this.upgraded, (status) =>
      this.record(req, status, status === 499 ? 'client_closed' : status >= 500 ? 'upstream_error' : 'forwarded', c.principal, start),
    );
  }

  private record(req: IncomingMessage, status: number, outcome: Outcome, p: Principal | null, start: number): void {
    this.opts.metrics.request(outcome, status);
    this.accessLog.record({
      method: req.method ?? '',
      path: loggedPath(req.url ?? ''),
      status,
      outcome,
      durationMs: Math.round((performance.now() - start) * 100) / 100,
      keyId: p?.id,
      keyName: p?.name,
      peer: req.socket.remoteAddress,
      time: Date.now(),
    });
  }
}
