import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { describe, test } from 'node:test';
import { createDatabase } from '../src/infra/database.js';
import { buildTestApp, captureLogs, engines, skipEngine, testConfig, testDatabaseEnv } from './helper.js';

interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

function cli(script: string, env: Record<string, string>, ...args: string[]): Promise<CliResult> {
  return cliWithInput(script, env, undefined, ...args);
}

function cliWithInput(
  script: string,
  env: Record<string, string>,
  input: string | undefined,
  ...args: string[]
): Promise<CliResult> {
  const entry = new URL(`../src/cli/${script}.ts`, import.meta.url).pathname;
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      ['--import', 'tsx', entry, ...args],
      { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 300_000 },
      (error, stdout, stderr) =>
        resolve({ status: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr }),
    );
    child.stdin?.end(input ?? '');
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

describe('user:create-admin', () => {
  test('creates an admin from a password on stdin; the admin can log in; no password in argv', async () => {
    const database = await testDatabaseEnv('sqlite');
    const env = { ...database.env, ARGON2_MEMORY_KIB: '1024', ARGON2_ITERATIONS: '1' };
    try {
      assert.equal((await cli('migrate', env)).status, 0);
      const created = await cliWithInput(
        'create-admin',
        env,
        'an admin password\n',
        '--email',
        'Root@Example.com',
        '--username',
        'root',
      );
      assert.equal(created.status, 0, created.stderr);
      assert.match(created.stdout, /created admin root <root@example.com>/);

      const again = await cliWithInput(
        'create-admin',
        env,
        'another password\n',
        '--email',
        'x@example.com',
        '--username',
        'ROOT',
      );
      assert.equal(again.status, 1);
      assert.match(again.stderr, /username is already taken/);
      const weak = await cliWithInput(
        'create-admin',
        env,
        'password123\n',
        '--email',
        'y@example.com',
        '--username',
        'weak',
      );
      assert.equal(weak.status, 1);
      assert.match(weak.stderr, /most common passwords/);
      const usage = await cliWithInput(
        'create-admin',
        env,
        'whatever password\n',
        '--email',
        'z@example.com',
      );
      assert.equal(usage.status, 1);
      assert.match(usage.stderr, /usage: npm run user:create-admin/);
      const argvPassword = await cli(
        'create-admin',
        env,
        '--email',
        'p@example.com',
        '--username',
        'p',
        '--password',
        'x',
      );
      assert.equal(argvPassword.status, 1, 'there is no --password option');

      const app = await buildTestApp({ env });
      try {
        const res = await app.inject({
          method: 'POST',
          url: '/api/auth/login',
          payload: { login: 'root', password: 'an admin password' },
        });
        assert.equal(res.statusCode, 200, res.body);
        assert.equal(res.json().user.role, 'admin');
      } finally {
        await app.close();
      }
    } finally {
      await database.cleanup();
    }
  });
});

describe('command-line errors', () => {
  test('a bad configuration exits 1 naming the variable', async () => {
    const result = await cli('migrate', { DATABASE_URL: 'mysql://nope' });
    assert.equal(result.status, 1);
    assert.match(result.stderr, /DATABASE_URL must use postgres: or postgresql:/);
  });
});
