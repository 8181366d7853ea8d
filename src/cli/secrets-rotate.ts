import { writeFileSync } from 'node:fs';
import { type Config, ConfigError, loadConfig } from '../config.js';
import { keyId, newSecret } from '../modules/auth/signing-keys.js';
import { CliError, parseCliArgs } from './run.js';

/**
 * `npm run secrets:rotate -- --secret jwt|metrics [--out FILE]`: makes a new random secret and
 * prints it (or writes it to a new file, mode 600) with the rotation steps for it, naming the key
 * ids this host's configuration holds now (README: Rotating secrets; decision 0055).
 */

const usage = 'usage: npm run secrets:rotate -- [--secret jwt|metrics] [--out FILE]';
const help = `  --secret  which secret: jwt (access-token signing key, the default) or metrics (the /metrics token)
  --out     write the new secret to FILE (created, mode 600; refused if it exists) instead of printing it`;

function currentConfig(): Config | undefined {
  try {
    return loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) return undefined;
    throw err;
  }
}

function jwtSteps(kid: string, where: string, config: Config | undefined): string[] {
  const auth = config?.auth;
  const current = auth === undefined || auth.jwtSecretGenerated ? undefined : keyId(auth.jwtSecret);
  const ring =
    auth === undefined
      ? 'This host has no valid configuration: the steps name no current key id.'
      : auth.jwtSecretGenerated
        ? 'This host has no JWT_SECRET (development: a random key per process).'
        : `This host's ring now: current ${current}` +
          (auth.jwtPreviousSecrets.length > 0
            ? `, previous ${auth.jwtPreviousSecrets.map(keyId).join(' ')}`
            : '') +
          (auth.jwtNextSecrets.length > 0 ? `, next ${auth.jwtNextSecrets.map(keyId).join(' ')}` : '') +
          '.';
  const old = current ?? '<the current kid>';
  const ttl = auth?.accessTokenTtlSeconds ?? 900;
  return [
    `New access-token signing key, kid ${kid}: ${where}`,
    ring,
    '',
    'Roll out each step to every server (one at a time: npm run pm2:reload) before the next one.',
    `1. Add it as the next key: JWT_SECRET_NEXT_FILE=<file holding the new key>. Servers then also accept`,
    `   tokens of kid ${kid}; they still sign with kid ${old}. Nothing changes for clients.`,
    '2. Promote it: JWT_SECRET_FILE=<the new key>, JWT_SECRET_PREVIOUS_FILE=<the old key>, JWT_SECRET_NEXT unset.',
    `   New tokens carry kid ${kid}; tokens of kid ${old} keep working. Servers not yet promoted accept`,
    '   the new tokens already (step 1).',
    `3. Retire the old key ${ttl + 60} s (ACCESS_TOKEN_TTL_SECONDS + 60) after the last server was promoted:`,
    `   unset JWT_SECRET_PREVIOUS. Tokens of kid ${old} are refused from then on; no session ends (a client`,
    '   refreshes and gets a token of the new key). The read-your-writes tokens follow the same ring.',
    'A leaked key: do steps 2 and 3 together, at once. Only tokens the leaked key signed are refused.',
  ];
}

function metricsSteps(where: string, config: Config | undefined): string[] {
  const set = config?.metrics.token !== undefined;
  return [
    `New metrics token: ${where}`,
    set
      ? 'This host has a METRICS_TOKEN now.'
      : 'This host has no METRICS_TOKEN now (/metrics is open or on METRICS_PORT).',
    '',
    'Roll out each step to every server (npm run pm2:reload) before the next one.',
    '1. METRICS_TOKEN_FILE=<the new token>, METRICS_TOKEN_PREVIOUS_FILE=<the old token>: both are accepted.',
    '2. Give the scrapers the new token (Prometheus: the credentials_file of the shipshape job) and reload',
    '   them; check that every target is up.',
    '3. Unset METRICS_TOKEN_PREVIOUS: the old token is refused (401).',
  ];
}

const args = parseCliArgs({
  usage,
  help,
  options: { secret: { type: 'string' }, out: { type: 'string' } },
});
try {
  const which = args.secret ?? 'jwt';
  if (which !== 'jwt' && which !== 'metrics')
    throw new CliError(`--secret must be jwt or metrics (got "${String(which)}")`);
  const secret = newSecret();
  let where = `\n\n  ${secret}\n`;
  if (typeof args.out === 'string') {
    try {
      writeFileSync(args.out, `${secret}\n`, { mode: 0o600, flag: 'wx' });
    } catch (err) {
      throw new CliError(`cannot create ${args.out}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
    }
    where = `written to ${args.out} (mode 600).`;
  }
  const config = currentConfig();
  const lines = which === 'jwt' ? jwtSteps(keyId(secret), where, config) : metricsSteps(where, config);
  process.stdout.write(`${lines.join('\n')}\n`);
} catch (err) {
  if (!(err instanceof CliError)) throw err;
  process.stderr.write(`secrets:rotate: ${err.message}\n`);
  process.exit(1);
}
