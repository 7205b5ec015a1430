import type { Duplex } from 'node:stream';

/**
 * How long keygate keeps reading (and discarding) from a connection it has
 * answered and half-closed, waiting for the client to close its side, before
 * it closes the connection itself. Long enough for any client to read the
 * answer; short enough that nobody can hold sockets open with it.
 */
export const LINGER_MS = 5_000;

function destroyThis(this: Duplex): void {
  this.destroy();
}

/** The peer closed its side: close ours once everything we wrote is out (never cut off our own answer). */
function onPeerEnd(this: Duplex): void {
  if (this.writableFinished) this.destroy();
  else this.once('finish', destroyThis);
}

/**
 * Ends the connection after what was written (the client gets a FIN, then the
 * answer is complete), and makes sure the descriptor is released: incoming
 * bytes are read and dropped so that the client's own FIN is seen (a socket
 * that is never read never notices the peer closing, and stays open forever),
 * and whatever the client does, the socket is destroyed after `LINGER_MS`.
 * Closing at once instead could turn unread bytes into a reset that destroys
 * the answer before the client reads it.
 *
 * `read: false` for a socket whose bytes someone else still consumes (Node's
 * HTTP parser, on a client error): only the timer then.
 */
export function closeGently(socket: Duplex, opts: { read: boolean } = { read: true }): void {
  if (socket.destroyed) return;
  if (socket.writable) socket.end();
  if (opts.read) {
    socket.once('end', onPeerEnd);
    socket.resume();
  }
  const timer = setTimeout(() => socket.destroy(), LINGER_MS);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
}

/** A set of sockets, each removed when it closes: what is still open at shutdown. */
export class SocketSet {
  private readonly open = new Set<Duplex>();

  add(socket: Duplex): void {
    if (socket.destroyed || this.open.has(socket)) return;
    this.open.add(socket);
    socket.once('close', () => this.open.delete(socket));
  }

  destroyAll(): void {
    for (const s of this.open) s.destroy();
    this.open.clear();
  }
}
