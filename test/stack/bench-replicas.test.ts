import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { skipUnlessNginx } from '../harness/nginx.js';
import { pgbouncerBinary } from '../harness/pgbouncer.js';
import { skipUnless } from '../harness/services.js';
import { scaleStack } from '../support/scale-stack.js';
import type { TestStack } from '../support/stack.js';
import { monitoringSkip } from './growth-monitoring.js';

/**
 * `npm run bench:replicas -- --smoke` on the scale stack the scale tests share, so the benchmark
 * cannot rot: it runs end to end, its replica target really reads the replica (the bench checks
 * db_replica_reads_total itself), and no request fails. No figure is asserted.
 */
const skip =
  skipUnlessNginx() ||
  (await skipUnless('postgres', 'redis')) ||
  (pgbouncerBinary() === undefined ? 'pgbouncer is not installed' : false);

describe('replica read benchmark, smoke', { skip }, () => {
  let stack: TestStack;
  before(async () => {
    stack = await scaleStack(monitoringSkip() === false);
  });
  after(async () => {
    await stack?.release();
  });

  test('npm run bench:replicas -- --smoke --state-dir <the scale stack> reports the three targets', async () => {
    const script = new URL('../../bench/replicas.ts', import.meta.url).pathname;
    const { code, stdout, stderr } = await new Promise<{ code: number; stdout: string; stderr: string }>(
      (resolve) => {
        execFile(
          process.execPath,
          ['--import', 'tsx', script, '--smoke', '--state-dir', stack.stateDir],
          { timeout: 300_000, maxBuffer: 8 * 1024 * 1024 },
          (err, out, errOut) =>
            resolve({ code: err === null ? 0 : Number(err.code ?? 1), stdout: out, stderr: errOut }),
        );
      },
    );
    assert.equal(code, 0, `${stdout}\n${stderr}`);
    for (const target of ['replica', 'primary-pgbouncer', 'primary-direct'])
      assert.match(stdout, new RegExp(`^\\| ${target} \\| \\d+ \\(`, 'm'), stdout);
    assert.match(stdout, /reads on the replica: [1-9]\d*/);
  });
});
