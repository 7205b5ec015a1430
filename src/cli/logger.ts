import pino, { type Logger } from 'pino';
import { KeygateError } from '../errors.ts';
import { colourWanted, painter } from './colour.ts';
import { PrettyStream } from './pretty-log.ts';

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];
const FORMATS = ['pretty', 'json'] as const;
export type LogFormat = (typeof FORMATS)[number];

let lastMs = 0;
let lastStamp = '';
/** pino's isoTime, formatted once per millisecond instead of once per line. */
function isoTimeCached(): string {
  const now = Date.now();
  if (now !== lastMs) {
    lastMs = now;
    lastStamp = `,"time":"${new Date(now).toISOString()}"`;
  }
  return lastStamp;
}

/** What an error code means, in words, for the codes an upstream or a listener commonly fails with. */
const REASONS: Record<string, string> = {
  ENOTFOUND: 'DNS lookup failed: no such host',
  EAI_AGAIN: 'DNS lookup failed for now (temporary)',
  ECONNREFUSED: 'connection refused: nothing listens there',
  ECONNRESET: 'connection reset by the other side',
  EPIPE: 'connection closed by the other side while writing',
  ETIMEDOUT: 'connection timed out',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  UND_ERR_CONNECT_TIMEOUT: 'connection timed out',
  UND_ERR_HEADERS_TIMEOUT: 'no response headers in time',
  UND_ERR_BODY_TIMEOUT: 'the response body stalled',
  UND_ERR_SOCKET: 'connection closed by the other side',
  CERT_HAS_EXPIRED: 'TLS certificate expired',
  DEPTH_ZERO_SELF_SIGNED_CERT: 'TLS certificate is self-signed',
  SELF_SIGNED_CERT_IN_CHAIN: 'TLS certificate chain is self-signed',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'TLS certificate cannot be verified',
  ERR_TLS_CERT_ALTNAME_INVALID: 'TLS certificate does not name this host',
  EADDRINUSE: 'address already in use',
  EACCES: 'permission denied',
  EROFS: 'read-only file system',
};

const ERROR_FIELDS = ['code', 'errno', 'syscall', 'hostname', 'address', 'port', 'path'] as const;

/**
 * `err` fields: an Error keeps its type, message, code, the system call and
 * host it failed on, its cause, a `reason` in words for a known code, and its
 * stack; anything else (a plain `{message, code}` object) is logged as it is,
 * not as an Error of type "Object" with an empty stack.
 */
export function serializeError(e: unknown, depth = 0): unknown {
  if (!(e instanceof Error)) {
    if (e !== null && typeof e === 'object' && depth === 0) {
      const code = (e as { code?: unknown }).code;
      return typeof code === 'string' && REASONS[code] !== undefined && !('reason' in e) ? { ...e, reason: REASONS[code] } : e;
    }
    return e;
  }
  const out: Record<string, unknown> = { type: e.name !== 'Error' ? e.name : e.constructor.name, message: e.message };
  const fields = e as unknown as Record<string, unknown>;
  for (const f of ERROR_FIELDS) if (fields[f] !== undefined) out[f] = fields[f];
  const cause = depth < 4 ? (e as { cause?: unknown }).cause : undefined;
  if (cause !== undefined) out.cause = serializeError(cause, depth + 1);
  const code = typeof out.code === 'string' ? out.code : (cause as { code?: unknown } | undefined)?.code;
  if (typeof code === 'string' && REASONS[code] !== undefined) out.reason = REASONS[code];
  if (depth === 0 && e.stack !== undefined) out.stack = e.stack;
  return out;
}

/** The log format: --log-format, else $KEYGATE_LOG_FORMAT, else readable lines on a terminal and JSON elsewhere. */
export function logFormat(flag: string | undefined, env: NodeJS.ProcessEnv, stderrIsTTY: boolean): LogFormat {
  for (const [value, what] of [
    [flag, '--log-format'],
    [env.KEYGATE_LOG_FORMAT, 'KEYGATE_LOG_FORMAT'],
  ] as const) {
    if (value === undefined || value === '') continue;
    if (!(FORMATS as readonly string[]).includes(value)) {
      throw new KeygateError('KG_ERR_USAGE', `${what} must be pretty or json (got ${JSON.stringify(value)})`);
    }
    return value as LogFormat;
  }
  return stderrIsTTY ? 'pretty' : 'json';
}

export interface RootLoggerOptions {
  /** Default: from KEYGATE_LOG_FORMAT and whether stderr is a terminal. */
  format?: LogFormat;
  /** Colour in readable lines (default: NO_COLOR, FORCE_COLOR and whether stderr is a terminal). */
  colour?: boolean;
  /** Where lines go (default: stderr). */
  destination?: { write(s: string): unknown };
}

/**
 * The one root logger, on stderr: JSON lines, or readable lines on a terminal
 * (formatted from the JSON pino wrote, so redaction is pino's either way).
 * Key headers and secret fields are redacted.
 */
export function rootLogger(env: NodeJS.ProcessEnv, opts: RootLoggerOptions = {}): Logger {
  const level = env.KEYGATE_LOG_LEVEL ?? 'info';
  if (!LEVELS.includes(level)) {
    throw new KeygateError('KG_ERR_USAGE', `KEYGATE_LOG_LEVEL must be one of ${LEVELS.join(', ')} (got ${JSON.stringify(level)})`);
  }
  const tty = process.stderr.isTTY === true;
  const format = opts.format ?? logFormat(undefined, env, tty);
  const raw = opts.destination ?? pino.destination({ dest: 2, sync: false });
  const destination = format === 'pretty' ? new PrettyStream(raw, painter(opts.colour ?? colourWanted(env, tty))) : raw;
  return pino(
    {
      name: 'keygate',
      level,
      base: { pid: process.pid },
      redact: {
        paths: ['key', '*.key', 'unmasked_key', '*.unmasked_key', 'headers["x-api-key"]', '*.headers["x-api-key"]', 'authorization', '*.authorization'],
        censor: '[redacted]',
      },
      serializers: { err: (e: unknown) => serializeError(e) },
      timestamp: isoTimeCached,
    },
    destination,
  );
}
