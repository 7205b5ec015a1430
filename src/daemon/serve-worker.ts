/**
 * A serving worker process (`keygate serve --workers N`): serves the proxy on
 * the listening socket it shares with the other workers, from a KeyTable that
 * the main process feeds with the control plane's updates. It never touches
 * the store or the config file. Key uses are batched to the main process;
 * metrics are handed over when the main process asks.
 */
import cluster from 'node:cluster';
import { Metrics } from '../admin/metrics.ts';
import { rootLogger } from '../cli/logger.ts';
import { ProxyServer, type ProxyConfig } from '../proxy/server.ts';
import { KeyTable } from '../proxy/snapshot.ts';
import { TableFeed } from '../proxy/table-feed.ts';
import type { FromWorker, ToWorker, WireProxyConfig } from './workers-protocol.ts';

if (!cluster.isWorker || process.send === undefined) throw new Error('serve-worker runs as a cluster worker of keygate serve');

const send = (m: FromWorker): void => {
  if (process.connected) process.send?.(m);
};
// JSON to the main process, which writes every process's lines in its own format.
const logger = rootLogger(process.env, { format: 'json' });
const metrics = new Metrics();
const table = new KeyTable();
let proxy: ProxyServer | null = null;
let uses = new Map<number, number>();
let flushTimer: NodeJS.Timeout | null = null;
let stopping = false;

const proxyConfig = (c: WireProxyConfig): ProxyConfig => ({ ...c, upstream: new URL(c.upstream) });

function flushUses(): void {
  if (uses.size === 0) return;
  send({ t: 'uses', uses: [...uses] });
  uses = new Map();
}

const feed = new TableFeed<Exclude<ToWorker, { t: 'table' | 'delta' }>>(
  table,
  (m) => void handle(m),
  () => send({ t: 'applied', position: table.position }),
);

async function handle(m: Exclude<ToWorker, { t: 'table' | 'delta' }>): Promise<void> {
  switch (m.t) {
    case 'init': {
      proxy = new ProxyServer({
        config: proxyConfig(m.config),
        snapshot: () => table.current(),
        logger,
        metrics,
        touch: (id, now) => uses.set(id, now),
        tls: m.tls,
      });
      try {
        await proxy.listen(m.listen.host, m.listen.port);
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        send({ t: 'listen-failed', code: e.code ?? 'EIO', message: e.message });
        return;
      }
      flushTimer = setInterval(flushUses, m.flushMs);
      const a = proxy.address();
      send({ t: 'listening', host: a.host, port: a.port });
      return;
    }
    case 'config':
      proxy?.reconfigure(proxyConfig(m.config));
      return;
    case 'tls':
      proxy?.setTls(m.tls);
      return;
    case 'metrics':
      send({ t: 'metrics', id: m.id, metrics: await metrics.registry.getMetricsAsJSON() });
      return;
    case 'stop': {
      if (stopping) return;
      stopping = true;
      if (flushTimer !== null) clearInterval(flushTimer);
      await proxy?.close(m.graceMs);
      logger.flush();
      // The last uses reach the main process before the channel closes; then leave.
      const last: FromWorker = { t: 'uses', uses: [...uses] };
      if (process.connected) process.send?.(last, undefined, {}, () => process.disconnect());
      return;
    }
  }
}

process.on('message', (m: ToWorker) => feed.push(m));
// Messages sent before this process listens for them would be lost: say when it does.
send({ t: 'ready' });
// The main process went away without a stop: nothing is left to serve for.
process.on('disconnect', () => {
  if (!stopping) void proxy?.close(0).then(() => process.exit(0));
  else setImmediate(() => process.exit(0));
});
// Signals are the main process's to handle: it stops the workers itself.
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => undefined);
