/**
 * The admin page's files, served from src/admin/ui/ by the admin listener:
 * only the files named below, read from disk, never cached, under a strict
 * Content-Security-Policy (everything comes from keygate itself).
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { packagePath } from '../paths.ts';
import type { ServerResponse } from 'node:http';

// From the package root, so that the compiled copy in build/<hash>/admin/ finds the same files.
const UI_DIR = packagePath('src', 'admin', 'ui');

/** URL path → file in src/admin/ui/ and its content type. Nothing else is served. */
const FILES: ReadonlyMap<string, { file: string; type: string }> = new Map([
  ['/', { file: 'index.html', type: 'text/html; charset=utf-8' }],
  ['/index.html', { file: 'index.html', type: 'text/html; charset=utf-8' }],
  ['/app.js', { file: 'app.js', type: 'text/javascript; charset=utf-8' }],
  ['/app.css', { file: 'app.css', type: 'text/css; charset=utf-8' }],
  // A file of its own rather than a data: URL, so that the CSP stays "everything from keygate".
  ['/favicon.svg', { file: 'favicon.svg', type: 'image/svg+xml' }],
]);

export const UI_HEADERS: Readonly<Record<string, string>> = {
  'cache-control': 'no-store',
  'content-security-policy': "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
};

/** Whether `pathname` is one of the page's files. */
export function isUiPath(pathname: string): boolean {
  return FILES.has(pathname);
}

/** Answers GET/HEAD for one of the page's files. */
export async function serveUi(res: ServerResponse, pathname: string, head: boolean): Promise<void> {
  const entry = FILES.get(pathname);
  if (entry === undefined) throw new Error(`not a ui file: ${pathname}`);
  const body = await readFile(path.join(UI_DIR, entry.file));
  res.writeHead(200, { 'content-type': entry.type, 'content-length': body.length, ...UI_HEADERS });
  res.end(head ? undefined : body);
}
