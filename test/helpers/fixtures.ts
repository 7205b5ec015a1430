/** Config files shared by several test files. */
import { yaml } from './config.ts';

export const ADMIN_KEY = 'admin-key-0123456789abcdef';
export const BOT_KEY = 'ci-bot-key-0123456789abcdef';
export const NEW_KEY = 'brand-new-key-0123456789ab';

/** One custom group (analysts) and two keys: "Admin API key" (admin) and "CI bot" (analysts by default). */
export function baseConfig(opts: { botGroup?: string } = {}): string {
  return yaml`
    version: 1
    config:
      groups:
        - name: analysts
          description: Read-only
          allow:
            - methods: [GET]
              paths: ["/api/card/**"]
      api-keys:
        - name: Admin API key
          group: admin
          key: ${ADMIN_KEY}
        - name: CI bot
          group: ${opts.botGroup ?? 'analysts'}
          key: ${BOT_KEY}
  `;
}

export interface KeyEntry {
  name: string;
  group: string;
  key: string;
}

/**
 * baseConfig's analysts group (and, with `writers`, an empty "writers" group) with the given
 * api-keys entries, in order: for tests that move keys between entries and groups.
 */
export function analystsWith(keys: readonly KeyEntry[], opts: { writers?: boolean } = {}): string {
  const entries = keys.map((k) => `    - name: ${k.name}\n      group: ${k.group}\n      key: ${k.key}\n`).join('');
  return (
    'version: 1\nconfig:\n  groups:\n    - name: analysts\n      description: Read-only\n      allow:\n' +
    '        - methods: [GET]\n          paths: ["/api/card/**"]\n' +
    (opts.writers === true ? '    - name: writers\n' : '') +
    `  api-keys:\n${entries}`
  );
}

/** The clash case: creates the writers group and moves "CI bot" into it (both fine), then creates "Clash" with NEW_KEY. */
export function clashConfig(): string {
  return analystsWith(
    [
      { name: 'Admin API key', group: 'admin', key: ADMIN_KEY },
      { name: 'CI bot', group: 'writers', key: BOT_KEY },
      { name: 'Clash', group: 'writers', key: NEW_KEY },
    ],
    { writers: true },
  );
}

/** baseConfig without the "CI bot" entry. */
export function withoutBot(): string {
  return baseConfig().replace(/ {4}- name: CI bot\n.*\n.*\n/, '');
}

/** baseConfig without the analysts group; "CI bot" moves to all-users. */
export function withoutAnalysts(): string {
  return yaml`
    version: 1
    config:
      api-keys:
        - name: Admin API key
          group: admin
          key: ${ADMIN_KEY}
        - name: CI bot
          group: all-users
          key: ${BOT_KEY}
  `;
}

/** A file declaring `names` as config keys in all-users; `settings` is inserted under `config:`. */
export function manyKeys(names: readonly string[], settings = ''): string {
  const entries = names.map((n) => `    - name: ${n}\n      group: all-users\n      key: key-material-for-${n}-0123456789\n`);
  return `version: 1\nconfig:\n${settings}  api-keys:${entries.length === 0 ? ' []' : ''}\n${entries.join('')}`;
}

export const range = (n: number, prefix = 'key'): string[] =>
  Array.from({ length: n }, (_, i) => `${prefix}-${String(i).padStart(3, '0')}`);
