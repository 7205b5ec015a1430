import { existsSync } from 'node:fs';
import path from 'node:path';
import { KeygateError } from '../errors.ts';

/**
 * The config file: `--config`, else $KEYGATE_CONFIG, else $MB_CONFIG_FILE_PATH
 * (Metabase's variable), else ./config.yml, else ./config.yaml.
 */
export function locateConfig(
  flag: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
  cwd: string = process.cwd(),
): string {
  const given = flag ?? nonEmpty(env.KEYGATE_CONFIG) ?? nonEmpty(env.MB_CONFIG_FILE_PATH);
  if (given !== undefined) return path.resolve(cwd, given);
  for (const name of ['config.yml', 'config.yaml']) {
    const candidate = path.resolve(cwd, name);
    if (existsSync(candidate)) return candidate;
  }
  throw new KeygateError(
    'KG_ERR_CONFIG_NOT_FOUND',
    `no config file: pass --config FILE, set KEYGATE_CONFIG or MB_CONFIG_FILE_PATH, or create ./config.yml (looked in ${cwd})`,
  );
}

/**
 * The database: --db, else $KEYGATE_DB, else keygate.database, else keygate.db in
 * $KEYGATE_DATA_DIR or, without it, beside the config file. A relative --db or
 * $KEYGATE_DB is resolved against the working folder, a relative keygate.database
 * against the config file's folder. A `postgres://` or `postgresql://` URL is
 * returned as it is.
 *
 * $KEYGATE_DATA_DIR is the default's folder only: a container image or a service
 * unit sets it to its writable volume without taking the choice away from the file
 * (as $KEYGATE_DB would: it wins over keygate.database).
 */
export function locateDatabase(
  flag: string | undefined,
  fromConfig: string | null,
  configFile: string,
  env: NodeJS.ProcessEnv = process.env,
  cwd: string = process.cwd(),
): string {
  const dir = path.dirname(configFile);
  const url = (v: string): boolean => /^postgres(ql)?:\/\//i.test(v);
  if (flag !== undefined) return url(flag) ? flag : path.resolve(cwd, flag);
  const fromEnv = nonEmpty(env.KEYGATE_DB);
  if (fromEnv !== undefined) return url(fromEnv) ? fromEnv : path.resolve(cwd, fromEnv);
  if (fromConfig !== null) return url(fromConfig) ? fromConfig : path.resolve(dir, fromConfig);
  const dataDir = nonEmpty(env.KEYGATE_DATA_DIR);
  return dataDir !== undefined ? path.resolve(cwd, dataDir, 'keygate.db') : path.resolve(dir, 'keygate.db');
}

function nonEmpty(v: string | undefined): string | undefined {
  return v === undefined || v === '' ? undefined : v;
}
