import { locateConfig } from '../config/locate.ts';
import { ConfigInvalidError, KeygateError } from '../errors.ts';
import { Daemon } from '../daemon/daemon.ts';
import { HELP_OPTION, parse, str, usageError, wantsHelp } from './args.ts';
import { commandHelp } from './help.ts';
import { count, printDiagnostics, type Io } from './io.ts';
import { rootLogger } from './logger.ts';

export async function serveCommand(args: string[], io: Io): Promise<number> {
  if (wantsHelp(args)) {
    io.out(commandHelp('serve'));
    return 0;
  }
  const p = parse(
    args,
    {
      config: { type: 'string', short: 'c' },
      db: { type: 'string' },
      listen: { type: 'string' },
      'admin-listen': { type: 'string' },
      upstream: { type: 'string' },
      workers: { type: 'string' },
      'log-format': { type: 'string' },
      ...HELP_OPTION,
    },
    'serve',
  );
  for (const flag of ['listen', 'admin-listen'] as const) {
    const v = str(p.values[flag]);
    if (v !== undefined && !/^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]*):\d{1,5}$/.test(v)) {
      throw usageError('serve', `--${flag} must be HOST:PORT, got ${JSON.stringify(v)}`);
    }
  }
  const upstream = str(p.values.upstream);
  if (upstream !== undefined && !/^https?:\/\/[^\s/]+/.test(upstream)) {
    throw usageError('serve', '--upstream must be an http:// or https:// URL');
  }
  const workersFlag = str(p.values.workers);
  let workers: number | 'auto' | undefined;
  if (workersFlag !== undefined) {
    if (workersFlag !== 'auto' && !/^[1-9][0-9]{0,2}$/.test(workersFlag)) {
      throw usageError('serve', `--workers must be a number from 1 to 256, or "auto", got ${JSON.stringify(workersFlag)}`);
    }
    workers = workersFlag === 'auto' ? 'auto' : Math.min(256, Number(workersFlag));
  }
  const file = locateConfig(str(p.values.config), io.env, io.cwd);
  const logger = rootLogger(io.env);
  const daemon = new Daemon({
    configFile: file,
    dbFlag: str(p.values.db),
    overrides: { listen: str(p.values.listen), adminListen: str(p.values['admin-listen']), upstream, workers },
    env: io.env,
    logger,
    out: io.out,
  });
  try {
    await daemon.start();
  } catch (err) {
    if (err instanceof ConfigInvalidError) {
      printDiagnostics(io.err, err.diagnostics, []);
      io.err(`serve: ${file} is invalid (${count(err.diagnostics.length, 'error')}): not serving\n`);
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
