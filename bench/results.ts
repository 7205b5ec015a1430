/**
 * bench/RESULTS.md holds one "## Name" section per benchmark script; each script
 * rewrites only its own section and leaves the others (and hand-written notes
 * under their own headings) as they are.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const RESULTS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'RESULTS.md');

/** Replaces (or appends) the section whose heading is `section`'s first line, up to the next "## " heading. */
export function updateResults(section: string): void {
  const heading = (section.trim().split('\n')[0] ?? '').trim();
  if (!heading.startsWith('## ')) throw new Error(`a results section starts with a "## " heading, not ${JSON.stringify(heading)}`);
  const old = existsSync(RESULTS) ? readFileSync(RESULTS, 'utf8') : '# keygate benchmarks\n\nResults of the scripts in `bench/`, one section per script.\n';
  const lines = old.split('\n');
  const start = lines.findIndex((l) => l.trim() === heading);
  let next: string;
  if (start === -1) {
    next = `${old.replace(/\n*$/, '')}\n\n${section.trim()}\n`;
  } else {
    let end = lines.findIndex((l, i) => i > start && /^## /.test(l));
    if (end === -1) end = lines.length;
    const before = lines.slice(0, start).join('\n').replace(/\n*$/, '');
    const after = lines.slice(end).join('\n').replace(/^\n*/, '');
    next = `${before === '' ? '' : `${before}\n\n`}${section.trim()}\n${after === '' ? '' : `\n${after.replace(/\n*$/, '')}\n`}`;
  }
  writeFileSync(RESULTS, next);
}
