/**
 * The package's root folder, found from this module's own location, so that
 * the same code finds schemas/, package.json and the admin page's files
 * whether it runs from src/ (through tsx) or from a compiled copy in
 * build/<hash>/ (bin/build.js).
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

function findRoot(from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    if (existsSync(path.join(dir, 'package.json')) && existsSync(path.join(dir, 'schemas', 'config.schema.json'))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`keygate: no package root above ${from}`);
  }
}

export const PACKAGE_ROOT = findRoot(path.dirname(fileURLToPath(import.meta.url)));

/** A path inside the package. */
export function packagePath(...parts: string[]): string {
  return path.join(PACKAGE_ROOT, ...parts);
}
