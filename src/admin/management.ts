/**
 * The serving side of the management API: matches the route, authenticates
 * the caller's admin key against the in-memory table (throttling failures as
 * the proxy does), reads a bounded body, and hands the request to the control
 * plane, which runs it (src/control/api.ts). Nothing here reads or writes the
 * store, so a management call never holds the serving thread.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ApiArgs, ApiReply } from '../control/protocol.ts';
import { authenticate } from '../proxy/auth.ts';
import { errorMessage } from '../proxy/respond.ts';
import type { KeySnapshot } from '../proxy/snapshot.ts';
import { FailedAuthThrottle } from '../proxy/throttle.ts';
import type { Metrics } from './metrics.ts';
import { matchRoute } from './routes.ts';
import { sendJson, type ApiHandler } from './server.ts';

export const MAX_BODY_BYTES = 64 * 1024;

export interface GatewayOptions {
  snapshot: () => KeySnapshot;
  keyHeader: () => string;
  failedAuthPerMinute: number;
  metrics: Metrics;
  /** Runs a request on the control plane. */
  call: (a: ApiArgs) => Promise<ApiReply>;
  now?: () => number;
}

class Refusal extends Error {
  constructor(
    readonly status: number,
    readonly body: object,
    readonly headers: Record<string, string> = {},
  ) {
    super(`http ${status}`);
  }
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > MAX_BODY_BYTES) throw new Refusal(413, { error: 'payload_too_large', message: `body over ${MAX_BODY_BYTES} bytes` });
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

export function managementGateway(o: GatewayOptions): ApiHandler {
  const now = o.now ?? Date.now;
  // Failed authentications are throttled per address here too, as on the proxy.
  const throttle = new FailedAuthThrottle(o.failedAuthPerMinute);

  function caller(req: IncomingMessage): { id: number; name: string } {
    const t = now();
    const peer = req.socket.remoteAddress ?? '';
    const wait = throttle.retryAfterSeconds(peer, t);
    const header = o.keyHeader();
    if (wait > 0) {
      o.metrics.authFailure('throttled');
      throw new Refusal(429, { error: 'too_many_requests', message: errorMessage('too_many_requests', header) }, { 'retry-after': String(wait) });
    }
    const raw = req.headers[header];
    const auth = authenticate(o.snapshot(), Array.isArray(raw) ? raw.join(', ') : raw, t);
    if (!auth.ok) {
      throttle.fail(peer, t);
      const code = auth.reason === 'missing' ? 'missing_api_key' : auth.reason === 'duplicate' ? 'duplicate_api_key' : 'invalid_api_key';
      o.metrics.authFailure(auth.reason);
      throw new Refusal(auth.reason === 'duplicate' ? 400 : 401, { error: code, message: errorMessage(code, header) });
    }
    if (!auth.principal.admin) {
      throw new Refusal(403, { error: 'forbidden', message: 'The management API needs a key of the admin group.' });
    }
    return { id: auth.principal.id, name: auth.principal.name };
  }

  return async (req: IncomingMessage, res: ServerResponse, url: URL): Promise<boolean> => {
    const match = matchRoute(req.method ?? 'GET', url.pathname);
    if (match.kind === 'none') return false;
    try {
      const actor = caller(req);
      if (match.kind === 'method_not_allowed') {
        const allow = match.allow.join(', ');
        throw new Refusal(405, { error: 'method_not_allowed', message: `use ${allow}` }, { allow });
      }
      // A client waiting for 100 Continue gets it now that its key is checked, and sends the body.
      if ((req as IncomingMessage & { expectsContinue?: boolean }).expectsContinue === true && match.body) res.writeContinue();
      const body = match.body ? await readBody(req) : null;
      let reply: ApiReply;
      try {
        reply = await o.call({ route: match.name, params: match.params, body, query: url.search.slice(1), actor });
      } catch (err) {
        throw new Refusal(503, { error: 'control_unavailable', message: `the change could not be made: ${(err as Error).message}; try again` }, { 'retry-after': '1' });
      }
      if (reply.action !== null) o.metrics.managementChanges.labels(reply.action).inc();
      if (reply.body === null) {
        res.writeHead(reply.status, reply.headers);
        res.end();
      } else {
        res.writeHead(reply.status, {
          'content-type': 'application/json; charset=utf-8',
          'content-length': reply.body.byteLength,
          'cache-control': 'no-store',
          ...reply.headers,
        });
        res.end(reply.body);
      }
    } catch (err) {
      if (!(err instanceof Refusal)) throw err;
      const extra: Record<string, string> = { ...err.headers };
      // A body that was announced but never asked for is not read: the connection ends with the answer.
      if ((req as IncomingMessage & { expectsContinue?: boolean }).expectsContinue === true) res.shouldKeepAlive = false;
      if (err.status === 401) extra['www-authenticate'] = `ApiKey realm="keygate", header="${o.keyHeader()}"`;
      sendJson(res, err.status, err.body, extra);
      req.resume();
    }
    return true;
  };
}
