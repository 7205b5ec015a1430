import { KeygateError } from '../errors.ts';
import { displayLocation, type OpenStoreOptions } from './open.ts';
import type { Store } from './types.ts';

export async function openPostgresStore(url: string, _opts: OpenStoreOptions): Promise<Store> {
  throw new KeygateError('KG_ERR_DATABASE', `${displayLocation(url)}: the PostgreSQL store is not available in this build`);
}
