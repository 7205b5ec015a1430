import { loadConfigFile, type LoadResult } from '../config/load.ts';
import { locateConfig, locateDatabase } from '../config/locate.ts';
import { str, type Parsed } from './args.ts';
import { json, printDiagnostics, type Io } from './io.ts';

/** Finds and loads the config named by flags/env; prints its problems. */
export function loadFromFlags(p: Parsed, io: Io, diagnosticsTo: 'out' | 'err'): { file: string; result: LoadResult } {
  const file = locateConfig(str(p.values.config), io.env, io.cwd);
  const result = loadConfigFile(file, { env: io.env });
  if (p.values.json !== true) {
    printDiagnostics(io[diagnosticsTo], result.ok ? [] : result.errors, result.warnings, io.paint[diagnosticsTo]);
  }
  return { file, result };
}

export function invalidJson(result: LoadResult): string {
  return json({ valid: result.ok, errors: result.ok ? [] : result.errors, warnings: result.warnings });
}

export function databasePath(p: Parsed, io: Io, configFile: string, fromConfig: string | null): string {
  return locateDatabase(str(p.values.db), fromConfig, configFile, io.env, io.cwd);
}
