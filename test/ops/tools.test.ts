import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { inCi } from '../harness/services.js';

// The one script that installs the Debian tools the ops suites use. Under CI every tool must be
// there (the run installs them first); elsewhere the check names what to install.
test('scripts/install-ops-tools.sh --check lists what is missing, and under CI nothing is', () => {
  const result = spawnSync('bash', ['scripts/install-ops-tools.sh', '--check'], { encoding: 'utf8' });
  const output = result.stdout + result.stderr;
  if (result.status === 0) {
    assert.match(output, /all ops tools are installed/);
  } else {
    assert.equal(result.status, 1, output);
    assert.match(
      output,
      /missing Debian packages: .+\ninstall them with: sudo scripts\/install-ops-tools\.sh/,
    );
    assert.ok(!inCi, `CI must have every ops tool installed:\n${output}`);
  }
});
