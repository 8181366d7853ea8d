import { createInterface } from 'node:readline';
import { pendingMigrations } from '../db/migrator.js';
import { AppError } from '../lib/errors.js';
import { createPasswordHasher } from '../modules/auth/passwords.js';
import { createUser } from '../modules/users/users.service.js';
import { CliError, runCli } from './run.js';

/**
 * `npm run user:create-admin -- --email a@example.com --username alice`
 *
 * The password is read from a hidden prompt on a terminal — asked twice, so a typo does not become
 * the admin's password — or from the first line of stdin when piped
 * (`printf '%s\n' "$PASSWORD" | npm run user:create-admin -- …`), never from argv, which other
 * users of the machine can read in the process list. There are no default accounts.
 */

async function readPassword(): Promise<string> {
  if (!process.stdin.isTTY) {
    const lines = createInterface({ input: process.stdin });
    for await (const line of lines) {
      lines.close();
      return line;
    }
    throw new CliError('no password on stdin');
  }
  const [password = '', again] = await readHiddenLines([
    'Password (input hidden): ',
    'The same password again: ',
  ]);
  if (password !== again) throw new CliError('the two passwords differ: nothing was created');
  return password;
}

/**
 * Reads one line per prompt from the terminal without echo (raw mode). Keys typed ahead, even
 * both lines in one burst, are kept for the next prompt; Backspace deletes, Ctrl-C cancels.
 */
function readHiddenLines(prompts: readonly string[]): Promise<string[]> {
  const stdin = process.stdin;
  // Echo off before the prompt shows: keys typed the moment it appears are not echoed either.
  stdin.setRawMode(true);
  stdin.resume();
  stdin.setEncoding('utf8');
  process.stderr.write(prompts[0] ?? '');
  return new Promise((resolve, reject) => {
    const lines: string[] = [];
    let current = '';
    const finish = (error?: CliError) => {
      stdin.off('data', onData);
      stdin.setRawMode(false);
      stdin.pause();
      if (error === undefined) resolve(lines);
      else reject(error);
    };
    const onData = (chunk: string) => {
      for (const char of chunk) {
        if (char === '\u0003') {
          process.stderr.write('\n');
          finish(new CliError('cancelled'));
          return;
        }
        if (char === '\r' || char === '\n') {
          // A CR LF pair (or LF after CR) from a terminal is one Enter.
          if (char === '\n' && lastWasCr) {
            lastWasCr = false;
            continue;
          }
          lastWasCr = char === '\r';
          process.stderr.write('\n');
          lines.push(current);
          current = '';
          if (lines.length === prompts.length) {
            finish();
            return;
          }
          process.stderr.write(prompts[lines.length] ?? '');
          continue;
        }
        lastWasCr = false;
        if (char === '\u007f' || char === '\b') current = current.slice(0, -1);
        else current += char;
      }
    };
    let lastWasCr = false;
    stdin.on('data', onData);
  });
}

const usage = 'usage: npm run user:create-admin -- --email <email> --username <username>';
await runCli(
  { usage, options: { email: { type: 'string' }, username: { type: 'string' } } },
  async ({ db, engine }, config, args) => {
    const values = { email: args.email as string | undefined, username: args.username as string | undefined };
    if (values.email === undefined || values.username === undefined) throw new CliError(usage);
    if (values.email.length > 254 || !/^[^@\s]+@[^@\s]+$/.test(values.email))
      throw new CliError('--email is not an email address');
    if (!/^[A-Za-z0-9_.-]{3,50}$/.test(values.username)) {
      throw new CliError('--username must be 3–50 letters, digits, _, . or -');
    }
    const pending = await pendingMigrations(db, engine);
    if (pending.length > 0)
      throw new CliError(`pending migrations (${pending.join(', ')}): run \`npm run db:migrate\` first`);

    const password = await readPassword();
    const length = [...password].length;
    if (length < 8 || length > 128) throw new CliError('the password must be 8–128 characters');
    try {
      const user = await createUser(db, createPasswordHasher(config.auth), {
        email: values.email,
        username: values.username,
        password,
        role: 'admin',
      });
      console.log(`${engine}: created admin ${user.username} <${user.email}> (${user.id})`);
    } catch (err) {
      if (err instanceof AppError) {
        const details = err.options.errors
          ?.map((e) => `${e.path.replace('/body/', '')} ${e.message}`)
          .join('; ');
        throw new CliError(`cannot create the admin: ${details ?? err.message}`);
      }
      throw err;
    }
  },
);
