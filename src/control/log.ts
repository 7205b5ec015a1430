/**
 * The little of a logger that the control plane uses. In its worker thread the
 * lines travel to the serving thread's root logger (one writer on stderr, one
 * redaction list); in-process (tests) a pino logger serves as it is.
 */
import type { Logger } from 'pino';
import type { FromControl } from './protocol.ts';

type Level = 'debug' | 'info' | 'warn' | 'error';
type Write = (fields: Record<string, unknown>, msg: string) => void;

export interface Log {
  debug: Write;
  info: Write;
  warn: Write;
  error: Write;
  child(bindings: { component: string }): Log;
}

/** A Log that posts its lines (as `log` messages) to whoever listens. */
export function postingLog(post: (m: FromControl) => void, component = 'control'): Log {
  const at =
    (level: Level): Write =>
    (fields, msg) =>
      post({ t: 'log', level, component, fields, msg });
  return {
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    child: (b) => postingLog(post, b.component),
  };
}

/** Writes a posted line through a pino logger, as its component's child would. */
export function writeLogLine(logger: Logger, m: Extract<FromControl, { t: 'log' }>): void {
  logger.child({ component: m.component })[m.level](m.fields, m.msg);
}

export function pinoLog(logger: Logger): Log {
  return {
    debug: (f, m) => logger.debug(f, m),
    info: (f, m) => logger.info(f, m),
    warn: (f, m) => logger.warn(f, m),
    error: (f, m) => logger.error(f, m),
    child: (b) => pinoLog(logger.child(b)),
  };
}
