import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { skipUnlessNginx } from './harness/nginx.js';
import { redisUrl, skipUnless } from './harness/services.js';
import { deleteKeys, testKeyPrefix } from './helper.js';

async function keyCount(prefix: string): Promise<number> {
  const client = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
  try {
    let count = 0;
    let cursor = '0';
    do {
      const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
      cursor = next;
      count += keys.length;
    } while (cursor !== '0');
    return count;
  } finally {
    client.disconnect();
  }
}

/** The benchmark, a second per scenario, so it cannot rot: every scenario runs and nothing fails. */
describe('benchmark smoke run', { skip: await skipUnless('postgres', 'redis') }, () => {
  const out = mkdtempSync(join(tmpdir(), 'shipshape-bench-smoke-'));
  const keyPrefix = testKeyPrefix('bench');
  after(async () => {
    rmSync(out, { recursive: true, force: true });
    await deleteKeys(redisUrl, keyPrefix);
  });

  test('npm run bench -- --smoke completes with every scenario answered and no errors', async () => {
    const script = new URL('../bench/run.ts', import.meta.url).pathname;
    const { code, stderr } = await new Promise<{ code: number; stderr: string }>((resolve) => {
      execFile(
        process.execPath,
        ['--import', 'tsx', script, '--smoke', '--out', out],
        {
          timeout: 300_000,
          maxBuffer: 20 * 1024 * 1024,
          env: { ...process.env, REDIS_KEY_PREFIX: keyPrefix },
        },
        (error, _stdout, err) => resolve({ code: error ? Number(error.code ?? 1) : 0, stderr: err }),
      );
    });
    assert.equal(code, 0, stderr);
    assert.match(stderr, new RegExp(`results written to ${out}/`), 'the message names where the files are');
    assert.equal(await keyCount(`${keyPrefix}bench:`), 0, 'the benchmark deleted its Redis keys');
    const json = readdirSync(out).find((f) => f.endsWith('.json'));
    assert.ok(json, 'a JSON result was written');
    const svg = readdirSync(out).find((f) => f.endsWith('.svg'));
    assert.ok(svg, 'an SVG chart was written beside it');
    assert.match(readFileSync(join(out, svg), 'utf8'), /<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
    const result = JSON.parse(readFileSync(join(out, json), 'utf8')) as {
      rows: Array<{
        scenario: string;
        target: string;
        result: { requests: number; errors: number; non2xx: number };
      }>;
      results: Record<string, number>;
      ratios: Array<{ key: string; median: number; rounds: number[] }>;
    };
    const scenarios = new Set(result.rows.map((r) => r.scenario.split(' ')[0]));
    // Scenario 6 runs the shipped nginx config in front of the app (CI has nginx; elsewhere it is optional).
    const edge = skipUnlessNginx() === false;
    assert.deepEqual([...scenarios].sort(), ['1', '2', '3', '4', '5', ...(edge ? ['6'] : [])]);
    for (const row of result.rows) {
      assert.ok(row.result.requests > 0, `${row.scenario} on ${row.target} answered nothing`);
      assert.equal(row.result.errors + row.result.non2xx, 0, `${row.scenario} on ${row.target}`);
    }
    for (const baseline of [
      'nodeHttp',
      'express',
      'hashMs',
      'verifyUs',
      'logFdUs',
      'logPm2Us',
      'logPerLineIpcUs',
      'pgbench',
      'roundTripsPerOrder',
      ...(edge ? ['edgeDirect', 'edgePlain', 'edgeTls'] : []),
    ]) {
      assert.ok(result.results[baseline] !== undefined && result.results[baseline] > 0, baseline);
    }
    // Each scenario's ratio to its baseline comes from the same (interleaved) rounds.
    for (const key of ['s1Memory/nodeHttp', 's1Redis/s1Memory', 's3/pgbench', 's5/nodeHttp']) {
      const ratio = result.ratios.find((r) => r.key === key);
      assert.ok(ratio !== undefined && ratio.median > 0 && ratio.rounds.length === 1, key);
    }
  });
});
