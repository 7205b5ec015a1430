import type { Server } from 'node:net';

/** Starts `server` on host:port; rejects with the listen error (EADDRINUSE, …). */
export function listenOn(server: Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/** The address a listening server is bound to. */
export function boundAddress(server: Server, what: string): { host: string; port: number } {
  const a = server.address();
  if (a === null || typeof a === 'string') throw new Error(`${what} is not listening`);
  return { host: a.address, port: a.port };
}
