/**
 * Certificates made for a test with the openssl command (Debian's
 * ca-certificates depends on it): a CA of the test's own, and server
 * certificates for 127.0.0.1 and localhost that it signs.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import type { TempDir } from './tmp.ts';

export interface Ca {
  cert: string;
  key: string;
  /** The CA certificate's PEM, for clients. */
  pem: string;
}

export interface ServerCert {
  cert: string;
  key: string;
  fingerprint256: string;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

export function makeCa(dir: TempDir, name = 'ca'): Ca {
  const cert = dir.path(`${name}.crt`);
  const key = dir.path(`${name}.key`);
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=keygate test ${name}`], dir.dir);
  return { cert, key, pem: readFileSync(cert, 'utf8') };
}

/** A server certificate for 127.0.0.1 and localhost, signed by `ca`, written to `<name>.crt` and `<name>.key`. */
export function makeServerCert(dir: TempDir, ca: Ca, name: string): ServerCert {
  const key = dir.path(`${name}.key`);
  const csr = dir.path(`${name}.csr`);
  const cert = dir.path(`${name}.crt`);
  const ext = dir.path(`${name}.ext`);
  writeFileSync(ext, 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${name}`], dir.dir);
  openssl(['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-out', cert, '-days', '2', '-extfile', ext], dir.dir);
  return { cert, key, fingerprint256: new X509Certificate(readFileSync(cert)).fingerprint256 };
}
