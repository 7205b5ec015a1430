import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Dispatcher } from 'undici';
import { upstreamFailure } from './forward.ts';
import { downstreamResponseHeaders } from './headers.ts';
import { errorMessage, type ErrorCode } from './respond.ts';
import { closeGently, type SocketSet } from './sockets.ts';

const REASONS: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  408: 'Request Timeout',
  414: 'URI Too Long',
  429: 'Too Many Requests',
  431: 'Request Header Fields Too Large',
  502: 'Bad Gateway',
  504: 'Gateway Timeout',
  508: 'Loop Detected',
};

/** The error answer as raw bytes, for a socket that has no ServerResponse (an upgrade request, a client error). */
function rawErrorBytes(status: number, code: ErrorCode, header: string, extra: Record<string, string>): string {
  const body = JSON.stringify({ error: code, message: errorMessage(code, header) });
  const lines = [
    `HTTP/1.1 ${status} ${REASONS[status] ?? 'Error'}`,
    'content-type: application/json; charset=utf-8',
    `content-length: ${Buffer.byteLength(body)}`,
    'cache-control: no-store',
    'connection: close',
  ];
  if (status === 401) lines.push(`www-authenticate: ApiKey realm="keygate", header="${header}"`);
  for (const [k, v] of Object.entries(extra)) lines.push(`${k}: ${v}`);
  return `${lines.join('\r\n')}\r\n\r\n${body}`;
}

/**
 * Writes an error answer on a raw socket (a refused upgrade request) and closes it, releasing the
 * descriptor whatever the client does next (sockets.ts `closeGently`).
 */
export function rawError(socket: Duplex, status: number, code: ErrorCode, header: string, extra: Record<string, string> = {}): void {
  if (socket.destroyed) return;
  if (socket.writable) socket.write(rawErrorBytes(status, code, header, extra));
  closeGently(socket);
}

/** The same for a client error, on a socket Node's HTTP parser still reads: the timer alone releases it. */
export function rawClientError(socket: Duplex, status: number, code: ErrorCode, header: string): void {
  if (socket.destroyed) return;
  if (socket.writable) socket.write(rawErrorBytes(status, code, header, {}));
  closeGently(socket, { read: false });
}

/**
 * The only upgrade keygate tunnels. Anything else (`h2c`, unknown tokens, a list
 * of several) is forwarded as a plain request with the upgrade headers removed,
 * so that an upstream can never switch protocols on a connection whose later
 * bytes keygate would then pass on unchecked.
 */
export const TUNNELLED_UPGRADES: readonly string[] = Object.freeze(['websocket']);

/** Whether this upgrade request is one keygate tunnels: GET with exactly one `Upgrade` token from the list. */
export function isTunnelledUpgrade(req: IncomingMessage): boolean {
  if (req.method !== 'GET') return false;
  const upgrade = req.headers.upgrade;
  return upgrade !== undefined && TUNNELLED_UPGRADES.includes(upgrade.trim().toLowerCase());
}

/** Connection tokens an upgrade adds, removed when the request is replayed as a plain one. */
const UPGRADE_TOKENS = new Set(['upgrade', 'http2-settings']);

/**
 * The request head of an upgrade request that is not tunnelled, as a plain
 * request: `Upgrade` and `HTTP2-Settings` removed, and their tokens removed
 * from `Connection`. Node's parser already validated every byte of it; the
 * result is what Node parses again as an ordinary request.
 */
export function plainRequestHead(req: IncomingMessage): Buffer {
  let head = `${req.method ?? 'GET'} ${req.url ?? '/'} HTTP/${req.httpVersion}\r\n`;
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    let value = raw[i + 1] as string;
    const lower = name.toLowerCase();
    if (lower === 'upgrade' || lower === 'http2-settings') continue;
    if (lower === 'connection') {
      value = value
        .split(',')
        .map((t) => t.trim())
        .filter((t) => t !== '' && !UPGRADE_TOKENS.has(t.toLowerCase()))
        .join(', ');
      if (value === '') continue;
    }
    head += `${name}: ${value}\r\n`;
  }
  return Buffer.from(`${head}\r\n`, 'latin1');
}

/** Bytes a client may send before the upstream has accepted the upgrade; past this, keygate stops reading it until then. */
const MAX_EARLY_BYTES = 64 * 1024;

function noop(): void {}

/**
 * An authenticated WebSocket upgrade, through undici's controller-based
 * handler API. Until the upstream answers 101, nothing the client sends
 * reaches the upstream (it is held, up to MAX_EARLY_BYTES); an upstream that
 * answers anything else gets its answer relayed with `connection: close`, and
 * the client's bytes are dropped. Once switched, the two sockets are piped
 * together and each one's close destroys the other. Every socket involved is
 * in `sockets` until it closes, for shutdown.
 */
class Tunnel implements Dispatcher.DispatchHandler {
  private controller: Dispatcher.DispatchController | null = null;
  private early: Buffer[] = [];
  private earlyBytes = 0;
  /** 0 until the upstream answered; then its status. */
  private status = 0;
  private clientGone = false;
  private ended = false;

  private readonly onEarlyData = (c: Buffer): void => this.keep(c);
  private readonly onClientGone = (): void => this.gone();

  constructor(
    private readonly client: Duplex,
    head: Buffer,
    private readonly via: string,
    private readonly keyHeader: string,
    private readonly sockets: SocketSet,
    private readonly onEnd: (status: number) => void,
  ) {
    if (head.length > 0) this.keep(head);
    client.on('data', this.onEarlyData);
    client.on('end', this.onClientGone);
    client.on('error', this.onClientGone);
    client.on('close', this.onClientGone);
  }

  /** Stops watching the client as a pending upgrade (it is switched, or answered). */
  private detach(): void {
    this.client.off('data', this.onEarlyData);
    this.client.off('end', this.onClientGone);
    this.client.off('error', this.onClientGone);
    this.client.off('close', this.onClientGone);
  }

  private keep(chunk: Buffer): void {
    this.early.push(chunk);
    this.earlyBytes += chunk.length;
    if (this.earlyBytes > MAX_EARLY_BYTES) this.client.pause();
  }

  private end(status: number): void {
    if (this.ended) return;
    this.ended = true;
    this.onEnd(status);
  }

  /** The client closed or failed before the tunnel was up: abort the upstream request. */
  private gone(): void {
    if (this.status === 101) return;
    this.clientGone = true;
    this.client.destroy();
    this.controller?.abort(new Error('client closed the connection'));
    this.end(this.status === 0 ? 499 : this.status);
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.clientGone) controller.abort(new Error('client closed the connection'));
  }

  onRequestUpgrade(_controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders, upstream: Duplex): void {
    this.sockets.add(upstream);
    upstream.on('error', noop);
    const protocol = headers.upgrade;
    if (this.clientGone || statusCode !== 101 || typeof protocol !== 'string' || !TUNNELLED_UPGRADES.includes(protocol.trim().toLowerCase())) {
      // An upstream switching to anything but what was asked for gets no tunnel.
      upstream.destroy();
      if (!this.clientGone) {
        this.status = 502;
        this.detach();
        rawError(this.client, 502, 'bad_gateway', this.keyHeader);
      }
      this.end(502);
      return;
    }
    this.status = 101;
    const client = this.client;
    this.detach();
    let head = 'HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: websocket\r\n';
    const rest = downstreamResponseHeaders(headers, this.via);
    for (let i = 0; i < rest.length; i += 2) head += `${rest[i] as string}: ${rest[i + 1] as string}\r\n`;
    client.write(`${head}\r\n`);
    for (const chunk of this.early) upstream.write(chunk);
    this.early = [];
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    client.pipe(upstream);
    upstream.pipe(client);
    client.resume();
    this.end(101);
  }

  onResponseStart(_controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders, statusMessage?: string): void {
    if (statusCode < 200 || this.clientGone) return;
    // The upstream did not switch protocols: its answer goes back as it is, then the connection closes.
    // What the client sends from now on is read and dropped, never forwarded.
    this.status = statusCode;
    this.client.off('data', this.onEarlyData);
    this.early = [];
    this.client.resume();
    let head = `HTTP/1.1 ${statusCode} ${statusMessage ?? ''}\r\n`;
    const list = downstreamResponseHeaders(headers, this.via);
    for (let i = 0; i < list.length; i += 2) head += `${list[i] as string}: ${list[i + 1] as string}\r\n`;
    // No transfer-encoding (undici removed the chunking): a body without content-length ends with the connection.
    this.client.write(`${head}connection: close\r\n\r\n`);
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.clientGone) return;
    if (!this.client.write(chunk)) {
      controller.pause();
      this.client.once('drain', () => controller.resume());
    }
  }

  onResponseEnd(): void {
    if (this.clientGone) return;
    this.early = [];
    this.detach();
    closeGently(this.client);
    this.end(this.status);
  }

  onResponseError(_controller: Dispatcher.DispatchController | undefined, err: Error & { code?: string }): void {
    if (this.clientGone) return;
    this.detach();
    if (this.status === 0) {
      const f = upstreamFailure(err);
      this.status = f.status;
      rawError(this.client, f.status, f.code, this.keyHeader);
    } else this.client.destroy();
    this.end(this.status);
  }
}

/**
 * Tunnels an authenticated WebSocket upgrade through `dispatcher` (undici). The
 * client socket and, once switched, the upstream socket are tracked in
 * `sockets` until they close. `onEnd(status)` is called once: 101 when the
 * tunnel is up, the upstream's status when it refused, 502/504 when it failed,
 * 499 when the client left first.
 */
export function tunnel(
  dispatcher: Dispatcher,
  client: Duplex,
  head: Buffer,
  path: string,
  headers: string[],
  timeoutMs: number,
  via: string,
  keyHeader: string,
  sockets: SocketSet,
  onEnd: (status: number) => void,
): void {
  const handler = new Tunnel(client, head, via, keyHeader, sockets, onEnd);
  try {
    dispatcher.dispatch({ path, method: 'GET', headers, body: null, upgrade: 'websocket', headersTimeout: timeoutMs, bodyTimeout: timeoutMs }, handler);
  } catch (err) {
    handler.onResponseError(undefined, err as Error);
  }
}
