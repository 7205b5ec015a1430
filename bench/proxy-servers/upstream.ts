/**
 * Bench upstream: a tiny Node HTTP server that answers every request with the
 * same small JSON body, keep-alive. Run in its own process by bench/proxy.ts:
 *
 *   node --import tsx bench/proxy-servers/upstream.ts PORT
 *
 * Prints "ready PORT" on stdout once it listens (127.0.0.1 only).
 *
 * GET /api/card/echo-headers answers with the request headers it received
 * instead: bench/proxy.ts checks once, before measuring, that each proxy
 * removed the key header and set the identity header.
 */
import { createServer } from 'node:http';

const BODY = Buffer.from(JSON.stringify({ id: 1, name: 'bench card', ok: true }));
const port = Number(process.argv[2] ?? 0);
const ECHO_HEADERS = '/api/card/echo-headers';

const server = createServer({ keepAliveTimeout: 60_000, requestTimeout: 0 }, (req, res) => {
  // Read (and discard) any request body before answering, as a real API would.
  if (req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined) req.resume();
  if (req.url === ECHO_HEADERS) {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(req.headers));
    return;
  }
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': BODY.length });
  res.end(BODY);
});
server.keepAliveTimeout = 60_000;
server.listen(port, '127.0.0.1', () => {
  const a = server.address();
  process.stdout.write(`ready ${typeof a === 'object' && a !== null ? a.port : port}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)).closeAllConnections());
