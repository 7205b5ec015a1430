/**
 * Every command's synopsis and help text, in one place, so that `keygate
 * --help`, `keygate <command> --help` and docs/cli.md (checked by
 * test/docs.test.ts) say the same thing.
 */

export type CommandName = 'validate' | 'plan' | 'apply' | 'serve' | 'keys generate' | 'keys hash' | 'keys list' | 'schema';

interface CommandHelp {
  /** The synopsis, as `keygate <command> …`. */
  usage: string;
  /** One line for `keygate --help`. */
  summary: string;
  /** The rest of `keygate <command> --help`. */
  details: string;
}

export const COMMANDS: Record<CommandName, CommandHelp> = {
  validate: {
    usage: 'keygate validate [-c FILE] [--json]',
    summary: 'check the config file (exit 0 valid, 1 invalid)',
    details: `Parses the config file, expands {{env NAME}} templates, checks it against the
JSON Schema and keygate's rules, and reports every problem with file, line and
column, in file order. --json prints {valid, errors, warnings} instead.
Exit 0: valid (warnings allowed). Exit 1: invalid.`,
  },
  plan: {
    usage: 'keygate plan [-c FILE] [--db FILE] [--json] [--allow-deletes]',
    summary: 'show what apply would change (exit 0 none, 2 changes, 1 error)',
    details: `Shows what \`keygate apply\` would change: + create, ~ update, - delete,
= N unchanged. Keys are masked. Writes nothing. A plan that the deletion
guard would refuse is shown, with the refusal (exit 1); with --allow-deletes
it is shown as \`keygate apply --allow-deletes\` would apply it.
On a terminal the lines are coloured (NO_COLOR turns that off).
Exit 0: no changes. Exit 2: changes. Exit 1: error.`,
  },
  apply: {
    usage: 'keygate apply [-c FILE] [--db FILE] [--json] [--allow-deletes]',
    summary: 'make the database match the file, then exit',
    details: `Makes the database match the config file in one transaction, then exits
(for container start-up). --allow-deletes lifts the deletion guard once.
Exit 0: applied, or nothing to do. Exit 1: error (nothing was changed).`,
  },
  serve: {
    usage:
      'keygate serve [-c FILE] [--db FILE] [--listen ADDR] [--admin-listen ADDR] [--upstream URL] [--workers N|auto] [--tls-cert FILE --tls-key FILE] [--log-format pretty|json]',
    summary: 'apply the file, then run the proxy and the admin listener, and follow the file',
    details: `Applies the config file, then serves the authenticating proxy (--listen,
keygate.listen, default 127.0.0.1:8080) in front of --upstream / keygate.upstream
(without one, a built-in demo upstream), and the admin listener with the admin
page (--admin-listen, keygate.admin_listen, default 127.0.0.1:8081). Prints
where everything is on stdout. Watches the file and reloads it; SIGHUP forces
a reload; SIGTERM/SIGINT stop gracefully (exit 0).
--workers N (keygate.workers; "auto": one per core) serves the proxy from N
processes sharing its socket; the default, 1, serves it from this process.
--tls-cert/--tls-key (keygate.tls) serve HTTPS on both listeners; renewed
files are put in place without a restart.
An invalid config at start is fatal: exit 1 with every error printed.
Logs go to stderr: readable lines on a terminal, JSON lines otherwise;
--log-format (or KEYGATE_LOG_FORMAT) chooses. KEYGATE_LOG_LEVEL: debug, info,
warn, error.`,
  },
  'keys generate': {
    usage: 'keygate keys generate [--prefix P] [--name N] [--group G] [--json]',
    summary: 'print a new key and its api-keys entry',
    details: `Prints a new key once, and an api-keys entry that carries only its key_hash,
indented to paste under \`api-keys:\` as is. Nothing is stored.
--json prints {key, key_hash, entry} instead, for scripts.
--prefix: up to 16 letters or digits, optionally ending in "_" (default kg_);
--name (default "New API key"); --group (default all-users).`,
  },
  'keys hash': {
    usage: 'keygate keys hash [KEY]',
    summary: 'print sha256:… of a key (argument or stdin)',
    details: `Prints sha256:<hex> of KEY, or of the first line of stdin when KEY is not
given (which keeps the key out of the shell history).`,
  },
  'keys list': {
    usage: 'keygate keys list [-c FILE] [--db FILE] [--json]',
    summary: 'list the database\'s keys, masked',
    details: `Lists the keys of the database, masked: group, source, status (active,
disabled, expired), and when each was created, last used and expires, in UTC.
--json adds the exact times. With --db or $KEYGATE_DB no config file is needed.`,
  },
  schema: {
    usage: 'keygate schema',
    summary: 'print the config file\'s JSON Schema',
    details: 'Prints the JSON Schema of the config file (schemas/config.schema.json), for editors and other tools.',
  },
};

/** `keygate <command> --help`. */
export function commandHelp(name: CommandName): string {
  const c = COMMANDS[name];
  return `Usage: ${c.usage}\n\n${c.details}\n`;
}

/** `keygate keys --help`. */
export function keysHelp(): string {
  const subs = (['keys generate', 'keys hash', 'keys list'] as const).map((n) => `  ${COMMANDS[n].usage}\n      ${COMMANDS[n].summary}`);
  return `Usage:\n${subs.join('\n')}\n\nRun \`keygate keys <command> --help\` for details.\n`;
}

function commandLines(): string {
  return (Object.keys(COMMANDS) as CommandName[])
    .map((n) => `  ${COMMANDS[n].usage.replace(/^keygate /, '')}\n      ${COMMANDS[n].summary}`)
    .join('\n');
}

export const HELP = `keygate: API keys declared in a YAML file, kept in a database, enforced by a reverse proxy.

Usage: keygate <command> [options]

Commands:
${commandLines()}

The config file is --config, else $KEYGATE_CONFIG, else $MB_CONFIG_FILE_PATH,
else ./config.yml, else ./config.yaml. The database is --db, else $KEYGATE_DB,
else keygate.database in the file, else keygate.db in $KEYGATE_DATA_DIR or
beside the config file.

Run \`keygate <command> --help\` for details. Docs: README.md and docs/.
`;
