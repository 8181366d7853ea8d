import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { describe, test } from 'node:test';
import { createDatabase } from '../src/infra/database.js';
import { captureLogs, engines, skipEngine, testConfig, testDatabaseEnv } from './helper.js';

interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

function cli(script: string, env: Record<string, string>, ...args: string[]): Promise<CliResult> {
  const entry = new URL(`../src/cli/${script}.ts`, import.meta.url).pathname;
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', entry, ...args],
      { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 60_000 },
      (error, stdout, stderr) =>
        resolve({ status: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr }),
    );
  });
}

for (const engine of engines) {
  describe(`database commands on ${engine}`, { skip: await skipEngine(engine) }, () => {
    test('db:migrate applies, then has nothing to do; db:seed loads 1,000 products once', async () => {
      const database = await testDatabaseEnv(engine);
      // What an operator sets: the connection only; migrations are run by the command.
      const env = { ...database.env, DATABASE_MIGRATE_ON_START: 'false' };
      try {
        if (engine === 'postgres') {
          const early = await cli('seed', env);
          assert.equal(early.status, 1);
          assert.match(early.stderr, /pending migrations \(001_initial\): run `npm run db:migrate` first/);
          assert.doesNotMatch(early.stderr, /\n\s+at /, 'a plain message, not a stack trace');
        }
        const first = await cli('migrate', env);
        assert.equal(first.status, 0, first.stderr);
        assert.match(first.stdout, new RegExp(`${engine}: applied 001_initial`));
        const second = await cli('migrate', env);
        assert.equal(second.status, 0, second.stderr);
        assert.match(second.stdout, /nothing to apply/);

        const seeded = await cli('seed', env);
        assert.equal(seeded.status, 0, seeded.stderr);
        assert.match(seeded.stdout, /seeded 1000 new demo products/);
        assert.match((await cli('seed', env)).stdout, /seeded 0 new demo products/);

        const handle = createDatabase(testConfig(env).database, captureLogs().logger);
        try {
          const { count } = await handle.db
            .selectFrom('products')
            .select((eb) => eb.fn.countAll<number>().as('count'))
            .executeTakeFirstOrThrow();
          assert.equal(Number(count), 1000);
        } finally {
          await handle.close();
        }
      } finally {
        await database.cleanup();
      }
    });
  });
}

describe('command-line errors', () => {
  test('a bad configuration exits 1 naming the variable', async () => {
    const result = await cli('migrate', { DATABASE_URL: 'mysql://nope' });
    assert.equal(result.status, 1);
    assert.match(result.stderr, /DATABASE_URL must use postgres: or postgresql:/);
  });
});
