import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createDatabase } from '../src/infra/database.js';
import { captureLogs, engines, skipEngine, testConfig, testDatabaseEnv } from './helper.js';
import { cli } from './support/cli.js';

for (const engine of engines) {
  describe(`db:migrate --down on ${engine}`, { skip: await skipEngine(engine) }, () => {
    test('says what it drops; refuses without --yes off a terminal, and in production without --allow-production', async () => {
      const database = await testDatabaseEnv(engine);
      const env = { ...database.env, DATABASE_MIGRATE_ON_START: 'false' };
      try {
        assert.equal((await cli('migrate', env)).status, 0);
        assert.equal((await cli('seed', env)).status, 0);
        // The latest migration goes first: it says what it drops, the users keep their rows.
        const asked = await cli('migrate', env, '--down');
        assert.equal(asked.status, 1);
        assert.match(
          asked.stderr,
          /reverting 003_accounts_and_jobs .* drops tables jobs \(\d+ rows\), account_tokens \(0 rows\)/,
        );
        const latest = await cli('migrate', env, '--down', '--yes');
        assert.equal(latest.status, 0, latest.stderr);
        assert.match(latest.stdout, new RegExp(`${engine}: reverted 003_accounts_and_jobs`));
        // The latest migration first: feature flags, then the initial schema below.
        const flags = await cli('migrate', env, '--down', '--yes');
        assert.equal(flags.status, 0, flags.stderr);
        assert.match(flags.stdout, new RegExp(`${engine}: reverted 002_feature_flags`));
        const drops =
          /drops tables idempotency_keys \(0 rows\), order_items \(0 rows\), orders \(0 rows\), products \(1000 rows\), refresh_tokens \(0 rows\), sessions \(0 rows\), users \(0 rows\)/;

        const unasked = await cli('migrate', env, '--down');
        assert.equal(unasked.status, 1);
        assert.match(unasked.stderr, /^refused: reverting 001_initial on (sqlite|postgres database)/);
        assert.match(unasked.stderr, drops);
        assert.match(unasked.stderr, /add --yes if you mean it/);

        const production = await cli(
          'migrate',
          { ...env, NODE_ENV: 'production', JWT_SECRET: 'a production secret of at least 32 bytes!' },
          '--down',
          '--yes',
        );
        assert.equal(production.status, 1);
        assert.match(production.stderr, /^refused: NODE_ENV=production and reverting 001_initial/);
        assert.match(production.stderr, /Add --allow-production if you mean it/);

        const handle = createDatabase(testConfig(env).database, captureLogs().logger);
        try {
          const tables = async () => (await handle.db.introspection.getTables()).map((t) => t.name).sort();
          assert.ok((await tables()).includes('products'), 'nothing was dropped by the refusals');
          const reverted = await cli('migrate', env, '--down', '--yes');
          assert.equal(reverted.status, 0, reverted.stderr);
          assert.match(reverted.stdout, new RegExp(`${engine}: reverted 001_initial`));
          // What it said it would drop is what went: no table is left.
          assert.deepEqual(await tables(), []);
        } finally {
          await handle.close();
        }
      } finally {
        await database.cleanup();
      }
    });
  });
}
