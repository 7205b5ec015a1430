/**
 * Baseline 4: node-http-proxy (`http-proxy`) with a keep-alive agent and an
 * `x-api-key` check: sha256 of the header, looked up in a Set of digests.
 * Missing or unknown key → 401; otherwise the key header is removed and the
 * request proxied.
 *
 *   node --import tsx bench/proxy-servers/http-proxy.ts PORT UPSTREAM_URL KEYS_FILE
 *
 * KEYS_FILE has one sha256 hex digest per line.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Agent, createServer } from 'node:http';
import httpProxy from 'http-proxy';

const port = Number(process.argv[2] ?? 0);
const target = process.argv[3] ?? 'http://127.0.0.1:3000';
const digests = new Set(readFileSync(process.argv[4] as string, 'utf8').split('\n').filter((l) => l !== ''));

const agent = new Agent({ keepAlive: true, maxSockets: 256, keepAliveMsecs: 4_000 });
const proxy = httpProxy.createProxyServer({ target, agent, xfwd: true });
proxy.on('error', (_err, _req, res) => {
  if ('writeHead' in res && !res.headersSent) {
    res.writeHead(502, { 'content-type': 'application/json' });
    res.end('{"error":"bad_gateway"}');
  } else res.destroy();
});

const server = createServer({ keepAliveTimeout: 5_000, requestTimeout: 0 }, (req, res) => {
  const key = req.headers['x-api-key'];
  if (typeof key !== 'string' || !digests.has(createHash('sha256').update(key).digest('hex'))) {
    res.writeHead(401, { 'content-type': 'application/json' });
    res.end('{"error":"invalid_api_key"}');
    return;
  }
  delete req.headers['x-api-key'];
  proxy.web(req, res);
});
server.listen(port, '127.0.0.1', () => {
  const a = server.address();
  process.stdout.write(`ready ${typeof a === 'object' && a !== null ? a.port : port}\n`);
});
process.on('SIGTERM', () => {
  server.close(() => {
    agent.destroy();
    process.exit(0);
  });
  server.closeAllConnections();
});
