/**
 * Readable log lines for a terminal, made from the JSON lines pino writes (so
 * whatever pino redacted stays redacted: this code never sees the original):
 *
 *   15:26:39.666 INFO  [daemon] config applied  trigger=start revision=1 create=3 config_keys=2
 *
 * Lines that are not JSON (a serving worker's, say) pass through as they are.
 */
import type { Paint } from './colour.ts';

const LEVELS: Record<number, { name: string; colour: Parameters<Paint>[1] }> = {
  10: { name: 'TRACE', colour: 'dim' },
  20: { name: 'DEBUG', colour: 'dim' },
  30: { name: 'INFO', colour: 'green' },
  40: { name: 'WARN', colour: 'yellow' },
  50: { name: 'ERROR', colour: 'red' },
  60: { name: 'FATAL', colour: 'red' },
};

/** Fields every line has, shown in the line's head or not at all. */
const HEAD = new Set(['level', 'time', 'pid', 'name', 'hostname', 'component', 'msg']);

/** Text with no control characters left in it (a request path is the client's: it must not drive the terminal). */
function safe(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** A value as `key=value` shows it: bare when it is plain printable ASCII, JSON otherwise. */
function scalar(v: unknown): string {
  if (typeof v === 'string') return /^[\x21-\x7e]+$/.test(v) && !/["=]/.test(v) ? v : safe(JSON.stringify(v));
  if (v === null || typeof v !== 'object') return String(v);
  return safe(JSON.stringify(v));
}

function clock(iso: unknown): string {
  const d = typeof iso === 'string' || typeof iso === 'number' ? new Date(iso) : new Date();
  if (Number.isNaN(d.getTime())) return String(iso);
  const pad = (n: number, w = 2): string => String(n).padStart(w, '0');
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

/** An `err` field: its message, code and reason; the stack only for errors that are the line's point. */
function error(err: Record<string, unknown>, level: number, paint: Paint): { inline: string; below: string[] } {
  const parts = [scalar(err.message ?? err.type ?? '?')];
  if (typeof err.code === 'string') parts.push(`code=${scalar(err.code)}`);
  if (typeof err.reason === 'string') parts.push(`reason=${JSON.stringify(err.reason)}`);
  const cause = err.cause as Record<string, unknown> | undefined;
  if (cause !== undefined && typeof cause === 'object' && cause !== null) parts.push(`cause=${scalar(cause.message ?? cause.code)}`);
  const below = level >= 50 && typeof err.stack === 'string' ? err.stack.split('\n').slice(1).map((l) => paint(`    ${safe(l.trim())}`, 'dim')) : [];
  return { inline: `${paint('err', 'dim')}=${parts.join(' ')}`, below };
}

/** One JSON log line as a readable one (with more lines below for lists and stacks); null when it is not a log line. */
export function prettyLine(line: string, paint: Paint): string | null {
  let o: Record<string, unknown>;
  try {
    const v = JSON.parse(line) as unknown;
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return null;
    o = v as Record<string, unknown>;
  } catch {
    return null;
  }
  const level = typeof o.level === 'number' ? o.level : 30;
  const l = LEVELS[level] ?? { name: String(level), colour: 'bold' as const };
  const head = [paint(clock(o.time), 'dim'), paint(l.name.padEnd(5), l.colour)];
  if (typeof o.component === 'string') head.push(paint(`[${safe(o.component)}]`, 'cyan'));
  head.push(paint(typeof o.msg === 'string' ? safe(o.msg) : '', 'bold'));
  const fields: string[] = [];
  const below: string[] = [];
  for (const [k, v] of Object.entries(o)) {
    if (HEAD.has(k) || v === undefined) continue;
    if (k === 'err' && v !== null && typeof v === 'object') {
      const e = error(v as Record<string, unknown>, level, paint);
      fields.push(e.inline);
      below.push(...e.below);
      continue;
    }
    if (Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'string')) {
      const inline = v.map((x) => scalar(x)).join(', ');
      if (v.length === 1 && inline.length <= 60) fields.push(`${paint(safe(k), 'dim')}=${inline}`);
      else below.push(`    ${paint(`${safe(k)}:`, 'dim')}`, ...v.map((x) => `      ${safe(x as string)}`));
      continue;
    }
    fields.push(`${paint(safe(k), 'dim')}=${scalar(v)}`);
  }
  const first = fields.length === 0 ? head.join(' ') : `${head.join(' ')}  ${fields.join(' ')}`;
  return [first, ...below].join('\n');
}

/** A pino destination that writes readable lines to another one. */
export class PrettyStream {
  private partial = '';

  constructor(
    private readonly out: { write(s: string): unknown; flush?: (cb?: (err?: Error) => void) => void; flushSync?: () => void },
    private readonly paint: Paint,
  ) {}

  write(chunk: string): boolean {
    // pino writes whole lines; the access log and the serving workers' forwarder write several at once.
    const text = this.partial + chunk;
    const lines = text.split('\n');
    this.partial = lines.pop() ?? '';
    let out = '';
    for (const line of lines) {
      if (line === '') continue;
      out += `${prettyLine(line, this.paint) ?? line}\n`;
    }
    if (out !== '') this.out.write(out);
    return true;
  }

  flush(cb?: (err?: Error) => void): void {
    if (typeof this.out.flush === 'function') this.out.flush(cb);
    else cb?.();
  }

  flushSync(): void {
    this.out.flushSync?.();
  }
}
