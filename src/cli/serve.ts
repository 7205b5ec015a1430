import path from 'node:path';
import { locateConfig } from '../config/locate.ts';
import { ConfigInvalidError, KeygateError } from '../errors.ts';
import { Daemon } from '../daemon/daemon.ts';
import { parse, str } from './args.ts';
import { printDiagnostics, type Io } from './io.ts';
import { rootLogger } from './logger.ts';

export const SERVE_HELP = `Usage: keygate serve [-c FILE] [--db FILE] [--listen ADDR] [--admin-listen ADDR] [--upstream URL]
                     [--workers N|auto] [--tls-cert FILE --tls-key FILE]

Applies the config file, then serves the authenticating proxy (--listen,
keygate.listen, default 127.0.0.1:8080) in front of --upstream / keygate.upstream
(without one, a built-in demo upstream), and the admin listener (--admin-listen,
keygate.admin_listen, default 127.0.0.1:8081). Watches the file and reloads it;
SIGHUP forces a reload; SIGTERM/SIGINT stop gracefully (exit 0).
--workers N (keygate.workers; "auto": one per core) serves the proxy from N
processes sharing its socket; the default, 1, serves it from this process.
--tls-cert/--tls-key (keygate.tls) serve HTTPS on both listeners; renewed
files are put in place without a restart.
An invalid config at start is fatal: exit 1 with every error printed.
Logs are JSON lines on stderr (KEYGATE_LOG_LEVEL: debug, info, warn, error).
`;

export async function serveCommand(args: string[], io: Io): Promise<number> {
  const p = parse(
    args,
    {
      config: { type: 'string', short: 'c' },
      db: { type: 'string' },
      listen: { type: 'string' },
      'admin-listen': { type: 'string' },
      upstream: { type: 'string' },
      workers: { type: 'string' },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    'serve',
  );
  if (p.values.help === true) {
    io.out(SERVE_HELP);
    return 0;
  }
  for (const flag of ['listen', 'admin-listen'] as const) {
    const v = str(p.values[flag]);
    if (v !== undefined && !/^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]*):\d{1,5}$/.test(v)) {
      throw new KeygateError('KG_ERR_USAGE', `keygate serve: --${flag} must be HOST:PORT, got ${JSON.stringify(v)}`);
    }
  }
  const upstream = str(p.values.upstream);
  if (upstream !== undefined && !/^https?:\/\/[^\s/]+/.test(upstream)) {
    throw new KeygateError('KG_ERR_USAGE', `keygate serve: --upstream must be an http:// or https:// URL`);
  }
  const workersFlag = str(p.values.workers);
  let workers: number | 'auto' | undefined;
  if (workersFlag !== undefined) {
    if (workersFlag !== 'auto' && !/^[1-9][0-9]{0,2}$/.test(workersFlag)) {
      throw new KeygateError('KG_ERR_USAGE', `keygate serve: --workers must be a number from 1 to 256, or "auto", got ${JSON.stringify(workersFlag)}`);
    }
    workers = workersFlag === 'auto' ? 'auto' : Math.min(256, Number(workersFlag));
  }
  const tlsCert = str(p.values['tls-cert']);
  const tlsKey = str(p.values['tls-key']);
  if ((tlsCert === undefined) !== (tlsKey === undefined)) {
    throw new KeygateError('KG_ERR_USAGE', 'keygate serve: --tls-cert and --tls-key go together');
  }
  const tls = tlsCert !== undefined && tlsKey !== undefined ? { cert: path.resolve(io.cwd, tlsCert), key: path.resolve(io.cwd, tlsKey) } : undefined;
  const file = locateConfig(str(p.values.config), io.env, io.cwd);
  const logger = rootLogger(io.env);
  const daemon = new Daemon({
    configFile: file,
    dbFlag: str(p.values.db),
    overrides: { listen: str(p.values.listen), adminListen: str(p.values['admin-listen']), upstream, workers, tls },
    env: io.env,
    logger,
    out: io.out,
  });
  try {
    await daemon.start();
  } catch (err) {
    if (err instanceof ConfigInvalidError) {
      printDiagnostics(io.err, err.diagnostics, []);
      io.err(`serve: ${file} is invalid (${err.diagnostics.length} errors): not serving\n`);
      await daemon.stop().catch(() => undefined);
      logger.flush();
      return 1;
    }
    await daemon.stop().catch(() => undefined);
    logger.flush();
    const e = err as NodeJS.ErrnoException & { address?: string; port?: number };
    if (e.code === 'EADDRINUSE' || e.code === 'EACCES' || e.code === 'EADDRNOTAVAIL') {
      const why = { EADDRINUSE: 'address already in use', EACCES: 'permission denied', EADDRNOTAVAIL: 'address not available' }[e.code];
      throw new KeygateError('KG_ERR_USAGE', `cannot listen on ${e.address ?? '?'}:${e.port ?? '?'}: ${why}`, { cause: err });
    }
    throw err;
  }
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string): void => {
      if (stopping) return;
      stopping = true;
      logger.info({ signal }, 'signal received');
      void daemon.stop().then(
        () => {
          logger.flush();
          resolve(0);
        },
        (err: unknown) => {
          logger.error({ err: { message: (err as Error).message } }, 'shutdown failed');
          logger.flush();
          resolve(1);
        },
      );
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGHUP', () => void daemon.reload(true, 'SIGHUP'));
  });
}
