import { readFileSync } from 'node:fs';
import { KeygateError } from '../errors.ts';
import { packagePath } from '../paths.ts';
import { processIo, type Io } from './io.ts';

export const HELP = `keygate: API keys declared in a YAML file, kept in SQLite, enforced by a reverse proxy.

Usage: keygate <command> [options]

Commands:
  validate [-c FILE] [--json]                      check the config file (exit 0 valid, 1 invalid)
  plan     [-c FILE] [--db FILE] [--json] [--allow-deletes]
                                                   show the changes (exit 0 none, 2 changes, 1 error)
  apply    [-c FILE] [--db FILE] [--json] [--allow-deletes]
                                                   make the database match the file and exit
  serve    [-c FILE] [--db FILE] [--listen ADDR] [--admin-listen ADDR] [--upstream URL] [--workers N]
                                                   run the proxy and admin listener, watch the file
  keys generate [--prefix P] [--name N] [--group G] print a new key and its api-keys entry
  keys hash [KEY]                                  print sha256:… of a key (argument or stdin)
  keys list [--db FILE] [--json]                   list keys, masked
  schema                                           print the config file's JSON Schema

The config file is --config, else $KEYGATE_CONFIG, else $MB_CONFIG_FILE_PATH,
else ./config.yml, else ./config.yaml. The database is --db, else $KEYGATE_DB,
else keygate.database in the file, else keygate.db beside the config file.

Run \`keygate <command> --help\` for details. Docs: README.md and docs/.
`;

function version(): string {
  const pkg = JSON.parse(readFileSync(packagePath('package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

export async function main(argv: string[], io: Io = processIo()): Promise<number> {
  const [command, ...args] = argv;
  const wantsJson = args.includes('--json');
  try {
    switch (command) {
      // Commands are imported when run: `serve` never loads the config parser on its serving thread.
      case 'validate':
        return (await import('./validate.ts')).validateCommand(args, io);
      case 'plan':
        return await (await import('./plan.ts')).planCommand(args, io, 'plan');
      case 'apply':
        return await (await import('./plan.ts')).planCommand(args, io, 'apply');
      case 'keys':
        return await (await import('./keys.ts')).keysCommand(args, io);
      case 'schema':
        io.out((await import('../config/schema.ts')).schemaText());
        return 0;
      case 'serve': {
        const { serveCommand } = await import('./serve.ts');
        return await serveCommand(args, io);
      }
      case '--version':
      case '-v':
      case 'version':
        io.out(`keygate ${version()}\n`);
        return 0;
      case undefined:
      case '--help':
      case '-h':
      case 'help':
        io.out(HELP);
        return command === undefined ? 1 : 0;
      default:
        io.err(`keygate: unknown command "${command}"\n\n${HELP}`);
        return 1;
    }
  } catch (err) {
    if (err instanceof KeygateError) {
      if (wantsJson) io.out(`${JSON.stringify({ error: err.code, message: err.message }, null, 2)}\n`);
      io.err(`error: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
}
