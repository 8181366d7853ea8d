import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createDatabase } from '../src/infra/database.js';
import { buildTestApp, captureLogs, engines, skipEngine, testConfig, testDatabaseEnv } from './helper.js';
import { cli, cliWithInput, onTerminal } from './support/cli.js';

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
          assert.match(
            early.stderr,
            /pending migrations \(001_initial, 002_feature_flags, 003_accounts_and_jobs\): run `npm run db:migrate` first/,
          );
          assert.doesNotMatch(early.stderr, /\n\s+at /, 'a plain message, not a stack trace');
        }
        const first = await cli('migrate', env);
        assert.equal(first.status, 0, first.stderr);
        assert.match(first.stdout, new RegExp(`${engine}: applied 001_initial, 002_feature_flags`));
        // The target comes first, before anything is written, and never with credentials.
        const target =
          engine === 'sqlite'
            ? `database: sqlite ${database.env.SQLITE_PATH}`
            : `database: postgres database ${new URL(database.env.DATABASE_URL ?? '').pathname.slice(1)} on 127.0.0.1:5432`;
        assert.equal(first.stdout.split('\n')[0], target);
        const second = await cli('migrate', env);
        assert.equal(second.status, 0, second.stderr);
        assert.match(second.stdout, /nothing to apply/);

        const seeded = await cli('seed', env);
        assert.equal(seeded.status, 0, seeded.stderr);
        assert.match(seeded.stdout, /seeded 1000 new demo products/);
        assert.match((await cli('seed', env)).stdout, /seeded 0 new demo products/);
        assert.equal(seeded.stdout.split('\n')[0], target);

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
      assert.match(created.stdout, /^database: sqlite .*\nsqlite: created admin root <root@example.com>/);

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
      assert.equal(argvPassword.status, 2, 'there is no --password option');
      assert.equal(
        argvPassword.stderr,
        'unknown option --password\nusage: npm run user:create-admin -- --email <email> --username <username>   (--help for details)\n',
      );
      const positional = await cli('create-admin', env, 'admin@example.com');
      assert.equal(positional.status, 2);
      assert.match(
        positional.stderr,
        /^unexpected argument "admin@example.com" \(flags start with --; after npm run, put -- before them\)\n/,
      );
      assert.doesNotMatch(positional.stderr, /\n\s+at /);
      const help = await cli('create-admin', env, '--help');
      assert.equal(help.status, 0);
      assert.match(help.stdout, /^usage: npm run user:create-admin/);

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

  test('on a terminal the hidden prompt asks twice; two different answers create nothing', async () => {
    const database = await testDatabaseEnv('sqlite');
    const env = { ...database.env, ARGON2_MEMORY_KIB: '1024', ARGON2_ITERATIONS: '1' };
    try {
      assert.equal((await cli('migrate', env)).status, 0);
      const typo = await onTerminal(env, ['first password 1', 'first passwrod 1'], 'typo');
      assert.notEqual(typo.status, 0, typo.output);
      assert.match(typo.output, /Password \(input hidden\): .*\n.*The same password again: /s);
      assert.match(typo.output, /the two passwords differ: nothing was created/);
      const same = await onTerminal(env, ['the admin password', 'the admin password'], 'same');
      assert.equal(same.status, 0, same.output);
      assert.match(same.output, /sqlite: created admin same <same@example.com>/);
      assert.doesNotMatch(
        `${typo.output}${same.output}`,
        /passw(or|ro)d 1|the admin password/,
        'nothing echoed',
      );
      const app = await buildTestApp({ env: database.env });
      try {
        const login = (name: string, password: string) =>
          app.inject({ method: 'POST', url: '/api/auth/login', payload: { login: name, password } });
        assert.equal((await login('same', 'the admin password')).statusCode, 200);
        assert.equal((await login('typo', 'first password 1')).statusCode, 401, 'the typo made no account');
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

  test('a misspelt flag on any command: one line, the usage, exit 2', async () => {
    for (const [script, flag, usage] of [
      ['migrate', '--dwon', 'usage: npm run db:migrate'],
      ['seed', '--force', 'usage: npm run db:seed'],
      ['idempotency-cleanup', '--all', 'usage: npm run idempotency:cleanup'],
    ] as const) {
      const result = await cli(script, {}, flag);
      assert.equal(result.status, 2, script);
      assert.equal(result.stderr.split('\n')[0], `unknown option ${flag}`);
      assert.ok(result.stderr.split('\n')[1]?.startsWith(usage), result.stderr);
      assert.equal(result.stdout, '', 'nothing was opened or written');
    }
  });
});
