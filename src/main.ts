import { type Config, ConfigError, loadConfig } from './config.js';
import { startServer } from './server.js';

/** Process entry: configuration → server. A bad configuration exits 1 with one line per problem. */
let config: Config;
try {
  config = loadConfig();
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  process.stderr.write(`${err.message}\n`);
  process.exit(1);
}

startServer(config).catch((err: unknown) => {
  process.stderr.write(
    `Start-up failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  );
  process.exit(1);
});
