import path from 'node:path';
import { locateConfig, locateDatabase } from '../config/locate.ts';
import { ConfigInvalidError, KeygateError } from '../errors.ts';
import { Daemon, ListenError } from '../daemon/daemon.ts';
import { HELP_OPTION, parse, str, usageError, wantsHelp } from './args.ts';
import { databaseAccessProblem } from './database-access.ts';
import { commandHelp } from './help.ts';
import { count, printDiagnostics, type Io } from './io.ts';
import { colourWanted } from './colour.ts';
import { logFormat, rootLogger } from './logger.ts';

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
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
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
  const format = str(p.values['log-format']);
  if (format !== undefined && format !== 'pretty' && format !== 'json') {
    throw usageError('serve', `--log-format must be pretty or json, got ${JSON.stringify(format)}`);
  }
  const workersFlag = str(p.values.workers);
  let workers: number | 'auto' | undefined;
  if (workersFlag !== undefined) {
    if (workersFlag !== 'auto' && !(/^[1-9][0-9]{0,2}$/.test(workersFlag) && Number(workersFlag) <= 256)) {
      throw usageError('serve', `--workers must be a number from 1 to 256, or "auto", got ${JSON.stringify(workersFlag)}`);
    }
    workers = workersFlag === 'auto' ? 'auto' : Number(workersFlag);
  }
  const tlsCert = str(p.values['tls-cert']);
  const tlsKey = str(p.values['tls-key']);
  if ((tlsCert === undefined) !== (tlsKey === undefined)) {
    throw usageError('serve', '--tls-cert and --tls-key go together');
  }
  const tls = tlsCert !== undefined && tlsKey !== undefined ? { cert: path.resolve(io.cwd, tlsCert), key: path.resolve(io.cwd, tlsKey) } : undefined;
  const file = locateConfig(str(p.values.config), io.env, io.cwd);
  const logger = rootLogger(io.env, { format: logFormat(format, io.env, io.tty.err), colour: colourWanted(io.env, io.tty.err) });
  const daemon = new Daemon({
    configFile: file,
    dbFlag: str(p.values.db),
    overrides: { listen: str(p.values.listen), adminListen: str(p.values['admin-listen']), upstream, workers, tls },
    env: io.env,
    logger,
    out: io.out,
  });
  const flushed = (): Promise<void> => new Promise((resolve) => logger.flush(() => resolve()));

  // Signal handlers first: a SIGTERM that comes while the daemon starts stops it once it has, instead of killing it midway.
  let requested = false;
  let started = false;
  let stopping = false;
  let done: (code: number) => void = () => undefined;
  const finished = new Promise<number>((resolve) => (done = resolve));
  const shutDown = (): void => {
    if (stopping) return;
    stopping = true;
    void daemon.stop().then(
      () => flushed().then(() => done(0)),
      (err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        void flushed().then(() => done(1));
      },
    );
  };
  const stop = (signal: string): void => {
    if (requested) {
      // A second Ctrl-C while the start still runs (a database that does not answer, say): stop now.
      if (!started) {
        logger.flush();
        process.exit(130);
      }
      return;
    }
    requested = true;
    logger.info({ signal }, 'signal received');
    if (started) shutDown();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGHUP', () => void daemon.reload(true, 'SIGHUP'));

  try {
    await daemon.start();
  } catch (err) {
    // Clean up at once (a daemon that never served logs no "shutting down"), then say why, after every line logged before.
    await daemon.stop().catch(() => undefined);
    await flushed();
    if (err instanceof ConfigInvalidError) {
      printDiagnostics(io.err, err.diagnostics, [], io.paint.err);
      io.err(`serve: ${file} is invalid (${count(err.diagnostics.length, 'error')}): not serving\n`);
    } else {
      io.err(`${io.paint.err('error:', 'red')} ${await startFailure(err, file, str(p.values.db), io)}\n`);
    }
    return 1;
  }
  started = true;
  if (requested) shutDown();
  return finished;
}

/** Why `serve` could not start, naming the listener or the file that failed. */
async function startFailure(err: unknown, file: string, dbFlag: string | undefined, io: Io): Promise<string> {
  if (err instanceof ListenError) {
    const why: Record<string, string> = {
      EADDRINUSE: 'address already in use (another process listens there)',
      EACCES: 'permission denied (ports below 1024 need privileges)',
      EADDRNOTAVAIL: 'address not available on this machine',
    };
    const flag = err.listener === 'proxy' ? '--listen or keygate.listen' : '--admin-listen or keygate.admin_listen';
    const what = err.listener === 'proxy' ? 'the proxy' : 'the admin listener';
    return `cannot listen on ${err.address} for ${what}: ${why[err.code] ?? (err.cause as Error).message}; choose another address with ${flag}`;
  }
  if (err instanceof KeygateError && err.code === 'KG_ERR_DATABASE') {
    // Which database: the control plane found it from the flags and the file; find it the same way.
    const { loadConfigFile } = await import('../config/load.ts');
    const loaded = loadConfigFile(file, { env: io.env });
    const location = locateDatabase(dbFlag, loaded.ok ? loaded.desired.settings.database : null, file, io.env, io.cwd);
    return databaseAccessProblem(location, 'write') ?? err.message;
  }
  return err instanceof Error ? err.message : String(err);
}
