import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { describe, test } from 'node:test';

/**
 * `npm ci` warns EBADENGINE when an installed package's `engines.node` excludes the running Node.
 * The project promises the Node of its own `engines` field (and CI runs Node 20 and 24), so every
 * package in the lock file must accept the lowest version of that range and Node 24. On Node 20,
 * content-disposition 3 (via @fastify/static) and cookie 2 (via light-my-request) asked for Node 22:
 * package.json `overrides` pins the previous majors, CommonJS builds with the same functions the two
 * callers use (`create`, `stringifySetCookie`). A dependency bump that brings a new warning fails
 * here, naming the package and its range.
 */

const require = createRequire(import.meta.url);
const semver = require('semver') as {
  minVersion(range: string): { version: string } | null;
  satisfies(version: string, range: string): boolean;
};

const root = new URL('..', import.meta.url);
const manifest = JSON.parse(readFileSync(new URL('package.json', root), 'utf8')) as {
  engines: { node: string };
  overrides?: Record<string, Record<string, string>>;
};
const lock = JSON.parse(readFileSync(new URL('package-lock.json', root), 'utf8')) as {
  packages: Record<string, { version?: string; engines?: { node?: string } | string[] }>;
};

const lowest = semver.minVersion(manifest.engines.node)?.version;

describe('Node versions: what package.json promises, every dependency accepts', () => {
  test('the lowest Node the project promises is at least 20.19 (require of ES modules, Sentry 11)', () => {
    assert.ok(lowest !== undefined, manifest.engines.node);
    assert.ok(semver.satisfies(lowest, '>=20.19.0'), lowest);
    assert.ok(semver.satisfies(process.version, manifest.engines.node), `this Node ${process.version}`);
  });

  for (const node of [lowest ?? '20.19.0', '24.0.0']) {
    test(`every package in the lock file accepts Node ${node}: npm ci prints no EBADENGINE`, () => {
      const refused: string[] = [];
      for (const [path, entry] of Object.entries(lock.packages)) {
        if (path === '' || entry.engines === undefined || Array.isArray(entry.engines)) continue;
        const range = entry.engines.node;
        if (range !== undefined && !semver.satisfies(node, range))
          refused.push(`${path}@${entry.version}: node ${range}`);
      }
      assert.deepEqual(refused, []);
    });
  }

  test('the overrides are in force in the lock file', () => {
    assert.equal(
      lock.packages['node_modules/@fastify/static/node_modules/content-disposition']?.version,
      '2.0.1',
    );
    assert.equal(lock.packages['node_modules/light-my-request/node_modules/cookie']?.version, '1.1.1');
    for (const [parent, pins] of Object.entries(manifest.overrides ?? {}))
      for (const [name, version] of Object.entries(pins)) {
        const installed =
          lock.packages[`node_modules/${parent}/node_modules/${name}`] ??
          lock.packages[`node_modules/${name}`];
        assert.equal(installed?.version, version, `${parent} → ${name}`);
      }
  });

  test('the overridden packages still do what their callers need', () => {
    const staticDir = require.resolve('@fastify/static');
    const { create } = createRequire(staticDir)('content-disposition') as { create(name: string): string };
    assert.equal(
      create('report ä.pdf'),
      'attachment; filename="report ?.pdf"; filename*=UTF-8\'\'report%20%C3%A4.pdf',
    );
    const injector = require.resolve('light-my-request');
    const { stringifySetCookie } = createRequire(injector)('cookie') as {
      stringifySetCookie(cookie: { name: string; value: string }): string;
    };
    assert.equal(stringifySetCookie({ name: 'a', value: 'b c' }), 'a=b%20c');
  });
});
