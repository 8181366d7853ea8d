import { parseArgs } from 'node:util';
import { type Config, ConfigError, loadConfig } from '../config.js';
import { createDatabase, type DatabaseHandle } from '../infra/database.js';
import { createLogger } from '../infra/logger.js';
import { permanentProblem } from '../infra/startup.js';
import { describeDatabase } from '../lib/targets.js';

/** A failure the user can act on: printed as one line, without a stack trace. */
export class CliError extends Error {}

export type CliArgs = Readonly<Record<string, string | boolean | string[] | undefined>>;

export interface CliSpec {
  /** One line: how to call the command (`usage: npm run … -- --flag <value>`). */
  readonly usage: string;
  /** A migration command: it connects to DATABASE_MIGRATION_URL when set (the owner role). */
  readonly migrations?: boolean;
  /** More lines for --help: what each flag does. */
  readonly help?: string;
  readonly options?: Readonly<Record<string, { type: 'string' | 'boolean'; multiple?: boolean }>>;
}

function isUnreachable(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'ECONNREFUSED' || code === 'ENOTFOUND' || code === 'ETIMEDOUT' || code === 'EHOSTUNREACH';
}

/** node:util's parse errors are paragraphs with a stack; a usage mistake deserves one line. */
function usageProblem(err: unknown): string {
  const code = (err as { code?: unknown }).code;
  const message = String((err as Error).message ?? err);
  if (code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') {
    const argument = /'([^']*)'/.exec(message)?.[1] ?? '';
    return `unexpected argument "${argument}" (flags start with --; after npm run, put -- before them)`;
  }
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION')
    return `unknown option ${/'([^']*)'/.exec(message)?.[1] ?? ''}`;
  return message.split(/\.\s/)[0] ?? message;
}

/** Parses argv by the spec: --help prints the usage (exit 0); a mistake prints one line and exits 2. */
export function parseCliArgs(spec: CliSpec, argv = process.argv.slice(2)): CliArgs {
  try {
    const { values } = parseArgs({
      args: argv,
      options: { ...spec.options, help: { type: 'boolean' } },
      strict: true,
      allowPositionals: false,
    });
    if (values.help === true) {
      process.stdout.write(`${spec.usage}\n${spec.help === undefined ? '' : `${spec.help}\n`}`);
      process.exit(0);
    }
    return values;
  } catch (err) {
    process.stderr.write(`${usageProblem(err)}\n${spec.usage}   (--help for details)\n`);
    process.exit(2);
  }
}

/** The configuration with the migrations' connection (DATABASE_MIGRATION_URL) in place of DATABASE_URL. */
export function forMigrations(config: Config): Config {
  if (config.database.migrationUrl === undefined) return config;
  return { ...config, database: { ...config.database, url: config.database.migrationUrl } };
}

/**
 * Runs a command-line task against the configured database: checks the arguments first, says which
 * database it is about to use (never the credentials), prints problems plainly and exits non-zero
 * on any failure (never swallowed).
 */
export async function runCli(
  spec: CliSpec,
  task: (handle: DatabaseHandle, config: Config, args: CliArgs) => Promise<void>,
): Promise<void> {
  const args = parseCliArgs(spec);
  let handle: DatabaseHandle | undefined;
  try {
    const loaded = loadConfig();
    const config = spec.migrations === true ? forMigrations(loaded) : loaded;
    process.stdout.write(`database: ${describeDatabase(config.database)}\n`);
    handle = createDatabase(
      config.database,
      createLogger({ env: config.env, log: { ...config.log, level: 'warn', pm2: undefined } }),
    );
    await task(handle, config, args);
    await handle.close();
  } catch (err) {
    await handle?.close().catch(() => {});
    const database = handle === undefined ? undefined : permanentProblem(err, loadConfig().database);
    if (err instanceof ConfigError || err instanceof CliError) console.error(err.message);
    else if (database !== undefined) console.error(database);
    else if (isUnreachable(err))
      console.error(
        `the database does not answer: ${(err as Error).message}; check that it runs and DATABASE_URL points at it`,
      );
    else console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
    process.exit(1);
  }
}
