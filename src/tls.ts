/**
 * TLS for the proxy and the admin listener: certificate and key files read and
 * checked together, modern defaults (TLS 1.2 and 1.3 only, Node's cipher list,
 * HTTP/1.1 by ALPN), and a watch that puts a renewed certificate in place
 * without a restart (cert-manager, certbot and Kubernetes secret volumes all
 * replace the files; the listeners keep running). A pair that does not load
 * (half written, key and certificate that do not match) changes nothing: the
 * certificate in use stays until a good pair is there.
 */
import { createSecureContext, type SecureContextOptions } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { readFileSync, statSync, watch, type FSWatcher } from 'node:fs';
import path from 'node:path';
import { KeygateError } from './errors.ts';

/** Where a listener's certificate chain and private key are (PEM files). */
export interface TlsFiles {
  cert: string;
  key: string;
}

/** The files' contents, as a listener takes them. Never logged. */
export interface TlsMaterial {
  cert: string;
  key: string;
}

export const TLS_MIN_VERSION = 'TLSv1.2' as const;

/** The options a TLS server is made, and re-keyed, with. */
export function secureOptions(m: TlsMaterial): SecureContextOptions & { ALPNProtocols: string[] } {
  return { cert: m.cert, key: m.key, minVersion: TLS_MIN_VERSION, ALPNProtocols: ['http/1.1'] };
}

/** What may be said of a certificate in a log line: never the key. */
export function describeCertificate(m: TlsMaterial): { subject: string; issuer: string; valid_to: string; fingerprint256: string } {
  const c = new X509Certificate(m.cert);
  return { subject: c.subject.replace(/\n/g, ', '), issuer: c.issuer.replace(/\n/g, ', '), valid_to: c.validTo, fingerprint256: c.fingerprint256 };
}

/** Reads and checks a certificate/key pair; throws a clear error naming the file (never its contents). */
export function loadTls(files: TlsFiles): TlsMaterial {
  const read = (file: string, what: string): string => {
    try {
      return readFileSync(file, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'EIO';
      throw new KeygateError('KG_ERR_TLS', `${file}: cannot read the TLS ${what} (${code === 'ENOENT' ? 'file not found' : code})`, { cause: err });
    }
  };
  const m = { cert: read(files.cert, 'certificate'), key: read(files.key, 'key') };
  try {
    new X509Certificate(m.cert);
  } catch (err) {
    throw new KeygateError('KG_ERR_TLS', `${files.cert}: not a PEM certificate`, { cause: err });
  }
  try {
    createSecureContext(secureOptions(m));
  } catch (err) {
    // OpenSSL's reason (a mismatch, an unreadable key) names no secret.
    const reason = (err as Error).message.replace(/^error:[0-9A-F]+:/, '');
    throw new KeygateError('KG_ERR_TLS', `${files.key}: the key does not go with ${files.cert} or cannot be read (${reason})`, { cause: err });
  }
  return m;
}

export interface CertWatchOptions {
  files: TlsFiles;
  onChange: (m: TlsMaterial) => void;
  onError: (err: KeygateError) => void;
  /** How often the files are stat'ed besides the folder watch (default 5000 ms). */
  pollMs?: number;
  /** Quiet time after an event before the files are read (default 200 ms): both files of a renewal land. */
  settleMs?: number;
}

/**
 * Watches a certificate and key for changes (their folders, so that rename-over
 * writes and Kubernetes' `..data` symlink swaps are seen, and a stat poll for
 * file systems without events), and hands over each new pair that loads.
 */
export class CertificateWatcher {
  private watchers: FSWatcher[] = [];
  private poll: NodeJS.Timeout | null = null;
  private timer: NodeJS.Timeout | null = null;
  private lastStat: string;
  private lastError: string | null = null;

  constructor(private readonly opts: CertWatchOptions) {
    this.lastStat = this.statKey();
  }

  start(): void {
    for (const dir of new Set([path.dirname(this.opts.files.cert), path.dirname(this.opts.files.key)])) {
      try {
        const w = watch(dir, () => this.schedule());
        w.on('error', () => undefined);
        this.watchers.push(w);
      } catch {
        // The poll below still sees changes.
      }
    }
    this.poll = setInterval(() => {
      if (this.statKey() !== this.lastStat) this.schedule();
    }, this.opts.pollMs ?? 5000);
    this.poll.unref();
  }

  private statKey(): string {
    return [this.opts.files.cert, this.opts.files.key]
      .map((f) => {
        try {
          const s = statSync(f);
          return `${s.ino}:${s.size}:${s.mtimeMs}`;
        } catch (err) {
          return (err as NodeJS.ErrnoException).code ?? 'error';
        }
      })
      .join('|');
  }

  private schedule(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = setTimeout(() => this.check(), this.opts.settleMs ?? 200);
    this.timer.unref();
  }

  private check(): void {
    this.timer = null;
    const key = this.statKey();
    if (key === this.lastStat) return;
    let m: TlsMaterial;
    try {
      m = loadTls(this.opts.files);
    } catch (err) {
      // Reported once per distinct problem; the files are read again at their next change.
      const e = err as KeygateError;
      if (e.message !== this.lastError) this.opts.onError(e);
      this.lastError = e.message;
      this.lastStat = key;
      return;
    }
    this.lastStat = key;
    this.lastError = null;
    this.opts.onChange(m);
  }

  close(): void {
    for (const w of this.watchers) w.close();
    this.watchers = [];
    if (this.poll !== null) clearInterval(this.poll);
    if (this.timer !== null) clearTimeout(this.timer);
  }
}
