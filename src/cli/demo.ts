import { randomBytes } from 'node:crypto';
import { type Config, ConfigError, loadConfig } from '../config.js';
import { migrateToLatest } from '../db/migrator.js';
import { createDatabase } from '../infra/database.js';
import { createLogger } from '../infra/logger.js';
import { createPasswordHasher } from '../modules/auth/passwords.js';
import { findUserByLogin, updateUser } from '../modules/users/users.repository.js';
import { createUser } from '../modules/users/users.service.js';
import type { UserRole } from '../modules/users/users.table.js';
import { startServer } from '../server.js';
import { seedDemoCatalog } from './demo-catalog.js';

/**
 * `npm run demo`: the prototype with something to look at — SQLite (data/demo.db unless
 * SQLITE_PATH says otherwise), the 1,000-product demo catalog, a demo customer and a demo admin
 * whose passwords are made up now and printed once (each run replaces them), then the service.
 * Development only: refused with NODE_ENV=production, and it never touches a DATABASE_URL.
 */
const accounts: ReadonlyArray<{ username: string; email: string; role: UserRole }> = [
  { username: 'demo', email: 'demo@example.com', role: 'customer' },
  { username: 'demo-admin', email: 'demo-admin@example.com', role: 'admin' },
];

function fail(message: string): never {
  process.stderr.write(`${message}\n`);
  process.exit(1);
}

if (process.env.NODE_ENV === 'production')
  fail(
    'npm run demo is for development: it prints passwords and makes demo accounts. Refused with NODE_ENV=production.',
  );
if (process.env.DATABASE_URL !== undefined || process.env.DATABASE_URL_FILE !== undefined)
  fail(
    'npm run demo runs the SQLite prototype; unset DATABASE_URL (it never writes demo accounts into a real database).',
  );

let config: Config;
try {
  config = loadConfig({ ...process.env, SQLITE_PATH: process.env.SQLITE_PATH ?? 'data/demo.db' });
} catch (err) {
  if (err instanceof ConfigError) fail(err.message);
  throw err;
}

const logger = createLogger({ env: config.env, log: { ...config.log, level: 'warn' } });
const database = createDatabase(config.database, logger);
const lines: string[] = [];
try {
  await migrateToLatest(database.db, database.engine);
  const added = await seedDemoCatalog(database.db);
  lines.push(`Demo catalog: ${added} products added (1,000 in all), SQLite at ${config.database.sqlitePath}`);
  const hasher = createPasswordHasher(config.auth);
  for (const account of accounts) {
    // One-time: a new random password every run, shown only here.
    const password = randomBytes(12).toString('base64url');
    const existing = await findUserByLogin(database.db, account.username);
    if (existing === undefined) {
      await createUser(database.db, hasher, { ...account, password });
    } else {
      await updateUser(database.db, existing.id, {
        password_hash: await hasher.hash(password),
        role: account.role,
        deactivated_at: null,
      });
    }
    lines.push(`  ${account.role.padEnd(8)}  login: ${account.username.padEnd(10)}  password: ${password}`);
  }
} finally {
  await database.close();
}

const app = await startServer(config);
const address = app.server.address();
const port = typeof address === 'object' && address !== null ? address.port : config.server.port;
process.stdout.write(
  `\n${lines[0]}\nDemo accounts (passwords change every run):\n${lines.slice(1).join('\n')}\n\n` +
    `Try: curl -s http://localhost:${port}/api/products?limit=3\n` +
    `     API docs: http://localhost:${port}/docs\n\n`,
);
