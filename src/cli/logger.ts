import pino, { type Logger } from 'pino';

/** The one root logger: JSON lines on stderr. Key headers and secret fields are redacted. */
export function rootLogger(env: NodeJS.ProcessEnv): Logger {
  return pino(
    {
      name: 'keygate',
      level: env.KEYGATE_LOG_LEVEL ?? 'info',
      base: { pid: process.pid },
      redact: {
        paths: ['key', '*.key', 'unmasked_key', '*.unmasked_key', 'headers["x-api-key"]', '*.headers["x-api-key"]', 'authorization', '*.authorization'],
        censor: '[redacted]',
      },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    pino.destination({ dest: 2, sync: false }),
  );
}
