import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { ConfigError, describeConfig, loadConfig } from '../src/config.js';

function problemsOf(env: Record<string, string>): readonly string[] {
  try {
    loadConfig(env);
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    return err.problems;
  }
  assert.fail('expected a ConfigError');
}

describe('configuration', () => {
  test('an empty environment gives a working developer setup on SQLite', () => {
    const config = loadConfig({});
    assert.equal(config.env, 'development');
    assert.equal(config.server.port, 3000);
    assert.equal(config.database.url, undefined);
    assert.match(config.database.sqlitePath, /data\/shipshape\.db$/);
    assert.equal(config.database.migrateOnStart, true);
    assert.equal(config.redis.url, undefined);
    assert.equal(config.server.bodyLimitBytes, 102_400);
    assert.equal(config.log.slowRequestMs, 1000);
    assert.deepEqual(config.cors.origins, []);
    assert.deepEqual(config.server.trustProxy, []);
  });

  test('PostgreSQL does not migrate on start unless asked', () => {
    assert.equal(loadConfig({ DATABASE_URL: 'postgres://u@h/db' }).database.migrateOnStart, false);
    assert.equal(
      loadConfig({ DATABASE_URL: 'postgres://u@h/db', DATABASE_MIGRATE_ON_START: 'true' }).database
        .migrateOnStart,
      true,
    );
  });

  test('a bad value names the variable', () => {
    assert.deepEqual(problemsOf({ PORT: 'eighty' }), [
      'PORT must be an integer between 0 and 65535 (got "eighty")',
    ]);
    assert.match(problemsOf({ LOG_LEVEL: 'loud' })[0] ?? '', /^LOG_LEVEL must be one of/);
    assert.match(problemsOf({ DATABASE_MIGRATE_ON_START: 'maybe' })[0] ?? '', /^DATABASE_MIGRATE_ON_START/);
  });

  test('every bad variable is reported at once', () => {
    const problems = problemsOf({ PORT: '-1', BODY_LIMIT_BYTES: 'x', CURRENCY: 'dollars' });
    assert.equal(problems.length, 3);
  });

  test('a malformed connection string is reported without echoing it (it may hold a password)', () => {
    const problems = problemsOf({ DATABASE_URL: 'postgres://user:s3cret@[bad' });
    assert.deepEqual(problems, ['DATABASE_URL is not a valid URL']);
    assert.match(
      problemsOf({ REDIS_URL: 'http://localhost' })[0] ?? '',
      /REDIS_URL must use redis: or rediss:/,
    );
  });

  test('secrets can come from NAME_FILE', (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'shipshape-config-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'token');
    writeFileSync(file, 'from-a-file\n');
    assert.equal(loadConfig({ METRICS_TOKEN_FILE: file }).metrics.token, 'from-a-file');
    assert.match(
      problemsOf({ METRICS_TOKEN_FILE: join(dir, 'missing') })[0] ?? '',
      /METRICS_TOKEN_FILE cannot be read/,
    );
    assert.match(
      problemsOf({ METRICS_TOKEN: 'a', METRICS_TOKEN_FILE: file })[0] ?? '',
      /METRICS_TOKEN and METRICS_TOKEN_FILE are both set/,
    );
  });

  test('CORS refuses the null origin, paths, and * mixed with origins', () => {
    assert.deepEqual(loadConfig({ CORS_ORIGINS: 'https://a.example, http://localhost:5173' }).cors.origins, [
      'https://a.example',
      'http://localhost:5173',
    ]);
    assert.match(problemsOf({ CORS_ORIGINS: 'null' })[0] ?? '', /must not contain "null"/);
    assert.match(problemsOf({ CORS_ORIGINS: 'https://a.example/path' })[0] ?? '', /is not an origin/);
    assert.match(problemsOf({ CORS_ORIGINS: '*,https://a.example' })[0] ?? '', /cannot be combined/);
  });

  test('trusted proxies must be addresses, CIDRs or keywords', () => {
    assert.deepEqual(loadConfig({ TRUST_PROXY: '10.0.0.0/8, 127.0.0.1, loopback, ::1' }).server.trustProxy, [
      '10.0.0.0/8',
      '127.0.0.1',
      'loopback',
      '::1',
    ]);
    assert.match(problemsOf({ TRUST_PROXY: 'true' })[0] ?? '', /TRUST_PROXY entry "true"/);
    assert.match(problemsOf({ TRUST_PROXY: '10.0.0.0/33' })[0] ?? '', /TRUST_PROXY entry/);
  });

  test('the grace period must fit in the shutdown timeout', () => {
    assert.match(
      problemsOf({ SHUTDOWN_GRACE_MS: '5000', SHUTDOWN_TIMEOUT_MS: '5000' })[0] ?? '',
      /SHUTDOWN_GRACE_MS must be less than/,
    );
  });

  test('the configuration is frozen', () => {
    const config = loadConfig({});
    assert.throws(() => {
      (config.server as { port: number }).port = 1;
    }, TypeError);
  });

  test('README.md and .env.example document every variable', () => {
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    const example = readFileSync(new URL('../.env.example', import.meta.url), 'utf8');
    const names = describeConfig().map((doc) => doc.name);
    assert.ok(names.length > 20);
    for (const name of names) {
      assert.ok(readme.includes(`\`${name}\``), `README.md does not document ${name}`);
      assert.match(example, new RegExp(`^#? ?${name}=`, 'm'), `.env.example does not list ${name}`);
    }
  });
});
