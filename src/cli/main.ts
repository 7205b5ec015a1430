import { readFileSync } from 'node:fs';
import { KeygateError } from '../errors.ts';
import { packagePath } from '../paths.ts';
import { closest } from '../suggest.ts';
import { parse, wantsHelp } from './args.ts';
import { COMMANDS, commandHelp, HELP, keysHelp, type CommandName } from './help.ts';
import { processIo, type Io } from './io.ts';

export { HELP } from './help.ts';

const TOP_LEVEL = ['validate', 'plan', 'apply', 'serve', 'keys', 'schema', 'help', 'version'];

function version(): string {
  const pkg = JSON.parse(readFileSync(packagePath('package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

function unknownCommand(command: string, known: readonly string[], where: string): KeygateError {
  if (command.startsWith('-')) {
    return new KeygateError(
      'KG_ERR_USAGE',
      `${where}: unknown option ${command}: options go after the command (keygate <command> [options]); see \`${where} --help\``,
    );
  }
  const hint = closest(command, known);
  return new KeygateError(
    'KG_ERR_USAGE',
    `${where}: unknown command ${JSON.stringify(command)}${hint === undefined ? '' : ` (did you mean ${hint}?)`}; see \`${where} --help\``,
  );
}

/** `keygate help [command]`. */
function help(args: readonly string[], io: Io): number {
  if (args.length === 0) {
    io.out(HELP);
    return 0;
  }
  const name = args.join(' ');
  if (name === 'keys') {
    io.out(keysHelp());
    return 0;
  }
  if (name in COMMANDS) {
    io.out(commandHelp(name as CommandName));
    return 0;
  }
  if (args[0] === 'keys' && args.length === 2) throw unknownCommand(args[1] as string, ['generate', 'hash', 'list'], 'keygate keys');
  throw unknownCommand(name, TOP_LEVEL, 'keygate');
}

export async function main(argv: string[], io: Io = processIo()): Promise<number> {
  const [command, ...args] = argv;
  const json = args.includes('--json');
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
        if (wantsHelp(args)) {
          io.out(commandHelp('schema'));
          return 0;
        }
        parse(args, {}, 'schema');
        io.out((await import('../config/schema.ts')).schemaText());
        return 0;
      case 'serve': {
        const { serveCommand } = await import('./serve.ts');
        return await serveCommand(args, io);
      }
      case '--version':
      case '-v':
      case 'version':
        if (wantsHelp(args)) {
          io.out('Usage: keygate --version\n\nPrints the version of keygate.\n');
          return 0;
        }
        parse(args, {}, 'version');
        io.out(`keygate ${version()}\n`);
        return 0;
      case '--help':
      case '-h':
      case 'help':
        return help(args, io);
      case undefined:
        io.err(HELP);
        return 1;
      default:
        throw unknownCommand(command, TOP_LEVEL, 'keygate');
    }
  } catch (err) {
    if (err instanceof KeygateError) {
      if (json) io.out(`${JSON.stringify({ error: err.code, message: err.message }, null, 2)}\n`);
      io.err(`${io.paint.err('error:', 'red')} ${err.message}\n`);
      return 1;
    }
    throw err;
  }
}
