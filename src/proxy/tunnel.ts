import net from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import { errorMessage, type ErrorCode } from './respond.ts';

const REASONS: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  429: 'Too Many Requests',
  502: 'Bad Gateway',
  504: 'Gateway Timeout',
  508: 'Loop Detected',
};

/** Writes an error answer on a raw socket (an `Upgrade` request that is refused) and closes it. */
export function rawError(
  socket: Duplex,
  status: number,
  code: ErrorCode,
  header: string,
  extra: Record<string, string> = {},
): void {
  const body = JSON.stringify({ error: code, message: errorMessage(code, header) });
  const lines = [
    `HTTP/1.1 ${status} ${REASONS[status] ?? 'Error'}`,
    'content-type: application/json; charset=utf-8',
    `content-length: ${Buffer.byteLength(body)}`,
    'connection: close',
  ];
  if (status === 401) lines.push(`www-authenticate: ApiKey realm="keygate", header="${header}"`);
  for (const [k, v] of Object.entries(extra)) lines.push(`${k}: ${v}`);
  socket.end(`${lines.join('\r\n')}\r\n\r\n${body}`);
}

/**
 * Tunnels an authenticated `Upgrade` request (WebSocket and others): replays
 * the request head to the upstream, then pipes bytes both ways until either
 * side closes.
 */
export function tunnel(
  upstream: URL,
  method: string,
  path: string,
  headers: readonly string[],
  client: Duplex,
  head: Buffer,
  connectTimeoutMs: number,
  keyHeader: string,
  onEnd: (status: number) => void,
): void {
  const port = Number(upstream.port || (upstream.protocol === 'https:' ? 443 : 80));
  const host = upstream.hostname.replace(/^\[|\]$/g, '');
  const conn =
    upstream.protocol === 'https:'
      ? tls.connect({ host, port, servername: net.isIP(host) === 0 ? host : undefined })
      : net.connect({ host, port });
  let connected = false;
  let ended = false;
  const end = (status: number): void => {
    if (ended) return;
    ended = true;
    onEnd(status);
  };
  conn.setTimeout(connectTimeoutMs, () => {
    if (!connected) {
      conn.destroy();
      rawError(client, 504, 'gateway_timeout', keyHeader);
      end(504);
    }
  });
  conn.once(upstream.protocol === 'https:' ? 'secureConnect' : 'connect', () => {
    connected = true;
    conn.setTimeout(0);
    let text = `${method} ${path} HTTP/1.1\r\n`;
    for (let i = 0; i < headers.length; i += 2) text += `${headers[i]}: ${headers[i + 1]}\r\n`;
    conn.write(`${text}\r\n`);
    if (head.length > 0) conn.write(head);
    client.pipe(conn);
    conn.pipe(client);
  });
  conn.on('error', () => {
    if (!connected) {
      rawError(client, 502, 'bad_gateway', keyHeader);
      end(502);
    } else client.destroy();
  });
  client.on('error', () => conn.destroy());
  client.on('close', () => {
    conn.destroy();
    end(101);
  });
  conn.on('close', () => client.destroy());
}
