import { ALL_USERS_GROUP, groupDisplayName } from '../config/types.ts';
import { DEFAULT_KEY_PREFIX, generateKey, keyHashString, maskKey } from '../keys/material.ts';
import { displayLocation, openStore } from '../store/open.ts';
import { loadConfigFile } from '../config/load.ts';
import { locateConfig, locateDatabase } from '../config/locate.ts';
import { closest } from '../suggest.ts';
import { COMMON, HELP_OPTION, parse, str, usageError, wantsHelp } from './args.ts';
import { explainOpenFailure } from './database-access.ts';
import { commandHelp, keysHelp } from './help.ts';
import { json, type Io } from './io.ts';

const SUBCOMMANDS = ['generate', 'hash', 'list'];

export async function keysCommand(args: string[], io: Io): Promise<number> {
  const [sub, ...rest] = args;
  switch (sub) {
    case 'generate':
      return generate(rest, io);
    case 'hash':
      return hash(rest, io);
    case 'list':
      return await list(rest, io);
    case '--help':
    case '-h':
    case 'help':
      io.out(keysHelp());
      return 0;
    case undefined:
      io.err(keysHelp());
      return 1;
    default: {
      if (sub.startsWith('-')) throw usageError('keys', `${sub} goes after the command: keygate keys <generate|hash|list> [options]`);
      const hint = closest(sub, SUBCOMMANDS);
      throw usageError('keys', `unknown command ${JSON.stringify(sub)} (${hint === undefined ? 'generate, hash or list' : `did you mean ${hint}?`})`);
    }
  }
}

/** A YAML scalar as the example files write it: names and digests quoted, simple words plain. */
function yamlScalar(value: string, quote: boolean): string {
  return !quote && /^[A-Za-z0-9][A-Za-z0-9_-]*$/.test(value) && !/^(true|false|null|yes|no|on|off|~|[0-9.]+)$/i.test(value)
    ? value
    : JSON.stringify(value);
}

function generate(args: string[], io: Io): number {
  if (wantsHelp(args)) {
    io.out(commandHelp('keys generate'));
    return 0;
  }
  const p = parse(
    args,
    { prefix: { type: 'string' }, name: { type: 'string' }, group: { type: 'string' }, json: { type: 'boolean' }, ...HELP_OPTION },
    'keys generate',
  );
  const prefix = str(p.values.prefix) ?? DEFAULT_KEY_PREFIX;
  if (!/^[A-Za-z0-9]{0,16}_?$/.test(prefix)) {
    throw usageError('keys generate', '--prefix must be up to 16 letters or digits, optionally ending in "_"');
  }
  const name = str(p.values.name) ?? 'New API key';
  if (name.length < 1 || name.length > 254) throw usageError('keys generate', '--name must be 1 to 254 characters');
  const group = str(p.values.group) ?? ALL_USERS_GROUP;
  if (group.length === 0) throw usageError('keys generate', '--group must name a group');
  const key = generateKey(prefix);
  const keyHash = keyHashString(key);
  if (p.values.json === true) {
    io.out(json({ key, key_hash: keyHash, entry: { name, group, key_hash: keyHash } }));
    return 0;
  }
  // Indented as the example files are (api-keys at 2 spaces, its entries at 4), to paste under `api-keys:` as is.
  const entry = [`    - name: ${yamlScalar(name, true)}`, `      group: ${yamlScalar(group, false)}`, `      key_hash: ${yamlScalar(keyHash, true)}`];
  io.out(
    `New API key (shown once, store it now; keygate keeps only its hash):\n\n  ${key}\n\n` +
      `Add this entry under config.api-keys:\n\n${entry.join('\n')}\n`,
  );
  return 0;
}

async function hash(args: string[], io: Io): Promise<number> {
  if (wantsHelp(args)) {
    io.out(commandHelp('keys hash'));
    return 0;
  }
  // Extra arguments are not quoted back: they may be keys.
  const p = parse(args, HELP_OPTION, 'keys hash', { max: 1, tooMany: `takes one key, got ${args.filter((a) => !a.startsWith('-')).length} arguments (quote a key that has spaces, or give it on stdin)` });
  let key = p.positionals[0];
  if (key === undefined) {
    const chunks: Buffer[] = [];
    for await (const c of io.stdin) chunks.push(Buffer.isBuffer(c) ? c : Buffer.from(String(c)));
    key = Buffer.concat(chunks).toString('utf8').split(/\r?\n/)[0] ?? '';
  }
  if (key.length === 0) throw usageError('keys hash', 'give the key as an argument or on stdin');
  io.out(`${keyHashString(key)}\n`);
  return 0;
}

/** `2026-11-26 15:26 UTC`. */
export function utcMinute(iso: string): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return `${d.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
}

async function list(args: string[], io: Io): Promise<number> {
  if (wantsHelp(args)) {
    io.out(commandHelp('keys list'));
    return 0;
  }
  const p = parse(args, COMMON, 'keys list');
  const now = Date.now();
  let dbFile: string;
  if (str(p.values.db) !== undefined || io.env.KEYGATE_DB) {
    dbFile = locateDatabase(str(p.values.db), null, io.cwd + '/x', io.env, io.cwd);
  } else {
    const configFile = locateConfig(str(p.values.config), io.env, io.cwd);
    const loaded = loadConfigFile(configFile, { env: io.env });
    dbFile = locateDatabase(undefined, loaded.ok ? loaded.desired.settings.database : null, configFile, io.env, io.cwd);
  }
  const store = await openStore(dbFile, { readOnly: true }).catch((err: unknown) => {
    throw explainOpenFailure(err, dbFile, 'read');
  });
  try {
    // Metabase's names of the built-in groups ("Administrators", "All Users"), as the management API shows them.
    const groups = new Map((await store.listGroups()).map((g) => [g.id, groupDisplayName(g)]));
    const all = await store.listKeys();
    const hashOnly = new Set(all.filter((k) => k.prefix === null).map((k) => k.id));
    const rows = all.map((k) => ({
      id: k.id,
      name: k.name,
      masked_key: maskKey(k.prefix),
      group: groups.get(k.groupId) ?? null,
      source: k.source,
      disabled: k.disabled,
      created_at: k.createdAt,
      last_used_at: k.lastUsedAt,
      expires_at: k.expiresAt,
      expired: k.expiresAt !== null && Date.parse(k.expiresAt) <= now,
    }));
    if (p.values.json === true) {
      io.out(json({ database: displayLocation(dbFile), keys: rows }));
      return 0;
    }
    const table = [['NAME', 'KEY', 'GROUP', 'SOURCE', 'STATUS', 'CREATED', 'LAST USED', 'EXPIRES']];
    for (const r of rows) {
      const status = [r.disabled ? 'disabled' : '', r.expired ? 'expired' : ''].filter((s) => s !== '').join(', ') || 'active';
      table.push([
        r.name,
        hashOnly.has(r.id) ? '(hash only)' : `${r.masked_key.slice(0, 7)}…`,
        r.group ?? '?',
        r.source,
        status,
        utcMinute(r.created_at),
        r.last_used_at === null ? 'never' : utcMinute(r.last_used_at),
        r.expires_at === null ? '-' : utcMinute(r.expires_at),
      ]);
    }
    const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
    const paint = io.paint.out;
    io.out(
      table
        .map((row, n) => {
          const line = row.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
          if (n === 0) return paint(line, 'bold');
          const status = row[4]!;
          return status === 'active' ? line : paint(line, status.includes('expired') ? 'red' : 'dim');
        })
        .join('\n') + '\n',
    );
    return 0;
  } finally {
    await store.close();
  }
}
