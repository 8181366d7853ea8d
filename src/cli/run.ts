import { type Config, ConfigError, loadConfig } from '../config.js';
import { createDatabase, type DatabaseHandle } from '../infra/database.js';
import { createLogger } from '../infra/logger.js';

/** A failure the user can act on: printed as one line, without a stack trace. */
export class CliError extends Error {}

/**
 * Runs a command-line task against the configured database: prints problems plainly and exits
 * non-zero on any failure (never swallowed).
 */
export async function runCli(task: (handle: DatabaseHandle, config: Config) => Promise<void>): Promise<void> {
  let handle: DatabaseHandle | undefined;
  try {
    const config = loadConfig();
    handle = createDatabase(
      config.database,
      createLogger({ env: config.env, log: { ...config.log, level: 'warn', pm2: undefined } }),
    );
    await task(handle, config);
    await handle.close();
  } catch (err) {
    await handle?.close().catch(() => {});
    if (err instanceof ConfigError || err instanceof CliError) console.error(err.message);
    else console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
    process.exit(1);
  }
}
