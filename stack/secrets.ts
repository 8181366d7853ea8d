import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { plainSecretNames } from '../src/config.js';

/**
 * The service's secrets in `env` moved into files (mode 0600 in `dir`, passed as `<NAME>_FILE`), as
 * production passes them: PM2 would write a plain value into its dump, and `npm run pm2:start|reload`
 * refuses one. Everything else is kept as it is.
 */
export function secretsToFiles(env: Readonly<Record<string, string>>, dir: string): Record<string, string> {
  const out: Record<string, string> = { ...env };
  const names = plainSecretNames(env);
  if (names.length > 0) mkdirSync(dir, { recursive: true, mode: 0o700 });
  for (const name of names) {
    const file = join(dir, name.toLowerCase().replaceAll('_', '-'));
    writeFileSync(file, env[name] ?? '', { mode: 0o600 });
    delete out[name];
    out[`${name}_FILE`] = file;
  }
  return out;
}

/** A variable of an environment made by `secretsToFiles`: its value, or its file's content. */
export function envValue(env: Readonly<Record<string, string>>, name: string): string | undefined {
  const file = env[`${name}_FILE`];
  return file === undefined ? env[name] : readFileSync(file, 'utf8');
}
