import assert from 'node:assert/strict';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { after, before, describe, test } from 'node:test';
import { hash as bcryptHash } from '@node-rs/bcrypt';
import type { FastifyInstance } from 'fastify';
import { loadConfig } from '../../src/config.js';
import { createPasswordHasher } from '../../src/modules/auth/passwords.js';
import { buildTestApp, testConfig } from '../helper.js';
import { login, uniqueName } from '../support/accounts.js';

describe('password hashing', () => {
  test('Argon2id with OWASP parameters by default', async () => {
    const production = loadConfig({ NODE_ENV: 'production', JWT_SECRET: 'x'.repeat(48) }).auth;
    assert.equal(production.passwordAlgorithm, 'argon2id');
    const hasher = createPasswordHasher(production);
    const stored = await hasher.hash('correct horse battery staple');
    assert.match(stored, /^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
    assert.equal(await hasher.verify(stored, 'correct horse battery staple'), true);
    assert.equal(await hasher.verify(stored, 'correct horse battery stapler'), false);
    assert.equal(hasher.needsRehash(stored), false);
  });

  test('production refuses weak parameters and a short signing key', () => {
    assert.throws(
      () => loadConfig({ NODE_ENV: 'production', JWT_SECRET: 'short' }),
      /JWT_SECRET must be at least 32 bytes/,
    );
    assert.throws(() => loadConfig({ NODE_ENV: 'production' }), /JWT_SECRET is required in production/);
    assert.throws(
      () => loadConfig({ NODE_ENV: 'production', JWT_SECRET: 'x'.repeat(48), BCRYPT_COST: '10' }),
      /BCRYPT_COST must be at least 12/,
    );
    assert.throws(
      () =>
        loadConfig({
          NODE_ENV: 'production',
          JWT_SECRET: 'x'.repeat(48),
          ARGON2_MEMORY_KIB: '4096',
          ARGON2_ITERATIONS: '1',
        }),
      /OWASP/,
    );
  });

  test('bcrypt is selectable, and hashes of either kind verify', async () => {
    const argon = createPasswordHasher(testConfig().auth);
    const bcrypt = createPasswordHasher(testConfig({ PASSWORD_HASH_ALGORITHM: 'bcrypt' }).auth);
    const a = await argon.hash('password one!');
    const b = await bcrypt.hash('password two!');
    assert.match(b, /^\$bcrypt-sha256\$\$2b\$04\$/);
    for (const hasher of [argon, bcrypt]) {
      assert.equal(await hasher.verify(a, 'password one!'), true);
      assert.equal(await hasher.verify(b, 'password two!'), true);
      assert.equal(await hasher.verify(b, 'password one!'), false);
    }
    // Each configuration wants the other kind upgraded.
    assert.equal(argon.needsRehash(b), true);
    assert.equal(bcrypt.needsRehash(a), true);
    assert.equal(bcrypt.needsRehash(b), false);
  });

  test('bcrypt’s 72-byte truncation does not make two long passwords equal', async () => {
    const bcrypt = createPasswordHasher(testConfig({ PASSWORD_HASH_ALGORITHM: 'bcrypt' }).auth);
    const prefix = 'p'.repeat(72);
    const stored = await bcrypt.hash(`${prefix}-one`);
    assert.equal(await bcrypt.verify(stored, `${prefix}-one`), true);
    assert.equal(await bcrypt.verify(stored, `${prefix}-two`), false, 'plain bcrypt would say true here');
  });

  test('imported plain bcrypt hashes verify and are always upgraded', async () => {
    const hasher = createPasswordHasher(testConfig().auth);
    const imported = await bcryptHash('legacy password', 12);
    assert.equal(await hasher.verify(imported, 'legacy password'), true);
    assert.equal(await hasher.verify(imported, 'legacy passw0rd'), false);
    assert.equal(hasher.needsRehash(imported), true);
  });

  test('weaker Argon2 parameters are upgraded; corrupt hashes verify nothing', async () => {
    const weak = createPasswordHasher(testConfig({ ARGON2_MEMORY_KIB: '512' }).auth);
    const strong = createPasswordHasher(testConfig({ ARGON2_MEMORY_KIB: '2048' }).auth);
    const stored = await weak.hash('some password');
    assert.equal(strong.needsRehash(stored), true);
    assert.equal(weak.needsRehash(stored), false);
    for (const corrupt of ['', '$argon2id$garbage', '$2b$12$short', 'plain-text']) {
      assert.equal(await strong.verify(corrupt, 'some password'), false);
    }
  });

  test('NFC and NFD spellings of one password are the same password', async () => {
    const hasher = createPasswordHasher(testConfig().auth);
    const stored = await hasher.hash('caf\u00e9 au lait!');
    assert.equal(await hasher.verify(stored, 'cafe\u0301 au lait!'), true);
  });

  test('hashing runs off the event loop', async () => {
    // Heavier than the default so one hash clearly outlasts scheduling noise.
    const hasher = createPasswordHasher(
      testConfig({ ARGON2_MEMORY_KIB: '65536', ARGON2_ITERATIONS: '3' }).auth,
    );
    let started = performance.now();
    await hasher.hash('warm-up and measure one');
    const oneHashMs = performance.now() - started;
    const histogram = monitorEventLoopDelay({ resolution: 2 });
    histogram.enable();
    started = performance.now();
    await Promise.all(Array.from({ length: 4 }, (_, i) => hasher.hash(`password number ${i}`)));
    histogram.disable();
    const maxDelayMs = histogram.max / 1e6;
    // Hashing on the event loop would stall it for about one hash at a time.
    assert.ok(
      maxDelayMs < oneHashMs / 2,
      `event loop stalled ${maxDelayMs.toFixed(1)} ms; one hash takes ${oneHashMs.toFixed(1)} ms`,
    );
  });
});

describe('hash upgrade at login', () => {
  let app: FastifyInstance;
  before(async () => {
    app = await buildTestApp();
  });
  after(() => app?.close());

  test('an imported bcrypt user logs in, and the stored hash becomes Argon2id', async () => {
    const name = uniqueName('legacy');
    const id = crypto.randomUUID();
    await app.database.db
      .insertInto('users')
      .values({
        id,
        email: `${name}@example.com`,
        username: name,
        password_hash: await bcryptHash('imported password', 10),
      })
      .execute();
    const res = await login(app, name, 'imported password');
    assert.equal(res.statusCode, 200, res.body);
    const row = await app.database.db
      .selectFrom('users')
      .select('password_hash')
      .where('id', '=', id)
      .executeTakeFirstOrThrow();
    assert.match(row.password_hash, /^\$argon2id\$/);
    assert.equal((await login(app, name, 'imported password')).statusCode, 200);
  });
});
