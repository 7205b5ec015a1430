import net from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import { errorMessage, type ErrorCode } from './respond.ts';

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

const MAX_RESPONSE_HEAD = 64 * 1024;

/**
 * Tunnels an authenticated `Upgrade` request (WebSocket and others): replays
 * the request head to the upstream and pipes bytes both ways only once the
 * upstream has answered 101 Switching Protocols. Until then nothing the client
 * sends reaches the upstream, so a refused upgrade never becomes a raw,
 * unchecked channel (request smuggling through h2c or a failed WebSocket).
 */
export function tunnel(
  upstream: URL,
  method: string,
  path: string,
  headers: readonly string[],
  client: Duplex,
  head: Buffer,
  timeoutMs: number,
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
  let status = 0;
  let ended = false;
  const end = (code: number): void => {
    if (ended) return;
    ended = true;
    onEnd(code);
  };
  client.pause();
  conn.setTimeout(timeoutMs, () => {
    if (status === 0) {
      conn.destroy();
      rawError(client, 504, 'gateway_timeout', keyHeader);
      end(504);
    } else if (status !== 101) {
      conn.destroy();
      client.destroy();
    }
  });
  conn.once(upstream.protocol === 'https:' ? 'secureConnect' : 'connect', () => {
    connected = true;
    let text = `${method} ${path} HTTP/1.1\r\n`;
    for (let i = 0; i < headers.length; i += 2) text += `${headers[i]}: ${headers[i + 1]}\r\n`;
    conn.write(`${text}\r\n`);
  });
  let pending = Buffer.alloc(0);
  let bodyLeft = -1;
  const onResponse = (chunk: Buffer): void => {
    if (status !== 0) {
      // A refused upgrade: relay the rest of its answer, then close.
      client.write(chunk);
      if (bodyLeft >= 0) {
        bodyLeft -= chunk.length;
        if (bodyLeft <= 0) finishRefused();
      } else if (chunk.subarray(-5).toString('latin1') === '0\r\n\r\n') finishRefused();
      return;
    }
    pending = Buffer.concat([pending, chunk]);
    const at = pending.indexOf('\r\n\r\n');
    if (at === -1) {
      if (pending.length > MAX_RESPONSE_HEAD) {
        conn.destroy();
        rawError(client, 502, 'bad_gateway', keyHeader);
        end(502);
      }
      return;
    }
    const headText = pending.subarray(0, at).toString('latin1');
    status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(headText)?.[1] ?? 502);
    if (status === 101) {
      conn.off('data', onResponse);
      conn.setTimeout(0);
      client.write(pending);
      if (head.length > 0) conn.write(head);
      client.pipe(conn);
      conn.pipe(client);
      client.resume();
      end(101);
      return;
    }
    // The upstream answered without switching protocols: pass that answer on, and
    // close both sides after it. The client's further bytes are never forwarded.
    const cl = /\r\ncontent-length:\s*(\d+)/i.exec(headText);
    const chunked = /\r\ntransfer-encoding:[^\r]*chunked/i.test(headText);
    const body = pending.subarray(at + 4);
    client.write(pending);
    if (cl !== null) {
      bodyLeft = Number(cl[1]) - body.length;
      if (bodyLeft <= 0) finishRefused();
    } else if (!chunked || body.subarray(-5).toString('latin1') === '0\r\n\r\n') {
      if (!chunked) bodyLeft = -1;
      if (chunked || status === 204 || status === 304) finishRefused();
    }
  };
  const finishRefused = (): void => {
    conn.destroy();
    client.end();
    end(status);
  };
  conn.on('data', onResponse);
  conn.on('end', () => {
    if (status !== 101) {
      if (status === 0) rawError(client, 502, 'bad_gateway', keyHeader);
      else client.end();
      end(status === 0 ? 502 : status);
    }
  });
  conn.on('error', () => {
    if (!connected || status === 0) {
      rawError(client, 502, 'bad_gateway', keyHeader);
      end(502);
    } else client.destroy();
  });
  client.on('error', () => conn.destroy());
  client.on('close', () => {
    conn.destroy();
    end(status === 0 ? 499 : status);
  });
  conn.on('close', () => {
    if (status === 101 || status === 0) client.destroy();
  });
}
