import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { skipUnless } from './harness/services.js';

/** The benchmark, a second per scenario, so it cannot rot: every scenario runs and nothing fails. */
describe('benchmark smoke run', { skip: await skipUnless('postgres', 'redis') }, () => {
  test('npm run bench -- --smoke completes with every scenario answered and no errors', async () => {
    const out = mkdtempSync(join(tmpdir(), 'shipshape-bench-smoke-'));
    const script = new URL('../bench/run.ts', import.meta.url).pathname;
    const { code, stderr } = await new Promise<{ code: number; stderr: string }>((resolve) => {
      execFile(
        process.execPath,
        ['--import', 'tsx', script, '--smoke', '--out', out],
        { timeout: 300_000, maxBuffer: 20 * 1024 * 1024 },
        (error, _stdout, err) => resolve({ code: error ? Number(error.code ?? 1) : 0, stderr: err }),
      );
    });
    assert.equal(code, 0, stderr);
    const json = readdirSync(out).find((f) => f.endsWith('.json'));
    assert.ok(json, 'a JSON result was written');
    const result = JSON.parse(readFileSync(join(out, json), 'utf8')) as {
      rows: Array<{
        scenario: string;
        target: string;
        result: { requests: number; errors: number; non2xx: number };
      }>;
      results: Record<string, number>;
    };
    const scenarios = new Set(result.rows.map((r) => r.scenario.split(' ')[0]));
    assert.deepEqual([...scenarios].sort(), ['1', '2', '3', '4', '5']);
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
    ]) {
      assert.ok(result.results[baseline] !== undefined && result.results[baseline] > 0, baseline);
    }
  });
});
