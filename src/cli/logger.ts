import pino, { type Logger } from 'pino';
import { KeygateError } from '../errors.ts';

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

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

/** The one root logger: JSON lines on stderr. Key headers and secret fields are redacted. */
export function rootLogger(env: NodeJS.ProcessEnv): Logger {
  const level = env.KEYGATE_LOG_LEVEL ?? 'info';
  if (!LEVELS.includes(level)) {
    throw new KeygateError('KG_ERR_USAGE', `KEYGATE_LOG_LEVEL must be one of ${LEVELS.join(', ')} (got ${JSON.stringify(level)})`);
  }
  return pino(
    {
      name: 'keygate',
      level,
      base: { pid: process.pid },
      redact: {
        paths: ['key', '*.key', 'unmasked_key', '*.unmasked_key', 'headers["x-api-key"]', '*.headers["x-api-key"]', 'authorization', '*.authorization'],
        censor: '[redacted]',
      },
      timestamp: isoTimeCached,
    },
    pino.destination({ dest: 2, sync: false }),
  );
}
