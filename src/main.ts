import { type Config, ConfigError, loadConfig } from './config.js';
import { StartupError } from './infra/startup.js';
import { startEventLoopWatchdog } from './infra/watchdog.js';
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

// A stuck event loop kills the process, so that its connections close and a fresh one starts.
// Armed once the server listens: start-up's synchronous work (module loading, SQLite migrations)
// can hold the loop past a short limit on a loaded machine, and a start-up that never gets to
// listening is the process manager's listen timeout to end (CI killed one at 1 s while it loaded).
startServer(config)
  .then(() => startEventLoopWatchdog(config.watchdogMs))
  .catch((err: unknown) => {
    // A failure with a known fix is one line; anything else keeps its stack for the bug report.
    const text =
      err instanceof StartupError
        ? err.message
        : err instanceof Error
          ? (err.stack ?? err.message)
          : String(err);
    process.stderr.write(`Start-up failed: ${text}\n`);
    process.exit(1);
  });
