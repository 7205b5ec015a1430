import { createServer, type Server } from 'node:http';

/** Request headers the demo never echoes: they may carry secrets. */
const SECRET_HEADERS = new Set(['authorization', 'cookie', 'proxy-authorization', 'x-api-key']);

/**
 * The built-in demo upstream, started by `serve` when no upstream is
 * configured: it answers every request with a JSON echo of what it received
 * (method, path, query, identity headers, other headers minus secrets).
 */
export function startDemoUpstream(keyHeader: string): Promise<{ server: Server; url: URL }> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (chunks.length < 64) chunks.push(c);
    });
    req.on('end', () => {
      const headers: Record<string, string | string[] | undefined> = {};
      for (const [k, v] of Object.entries(req.headers)) {
        if (!SECRET_HEADERS.has(k) && k !== keyHeader) headers[k] = v;
      }
      const url = new URL(req.url ?? '/', 'http://demo');
      const body = JSON.stringify(
        {
          demo: 'keygate built-in demo upstream: set keygate.upstream to proxy your API',
          method: req.method,
          path: url.pathname,
          query: Object.fromEntries(url.searchParams),
          api_key: {
            id: req.headers['x-api-key-id'] ?? null,
            name: req.headers['x-api-key-name'] ?? null,
            group: req.headers['x-api-key-group'] ?? null,
          },
          body_bytes: size,
          headers,
        },
        null,
        2,
      );
      res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const a = server.address();
      if (a === null || typeof a === 'string') return reject(new Error('demo upstream has no address'));
      resolve({ server, url: new URL(`http://127.0.0.1:${a.port}`) });
    });
  });
}
