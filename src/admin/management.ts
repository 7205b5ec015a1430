import type { ApiHandler } from './server.ts';
import type { Daemon } from '../daemon/daemon.ts';

/** The Metabase-compatible management API (issue: management API). */
export function managementApi(_daemon: Daemon): ApiHandler {
  return () => false;
}
