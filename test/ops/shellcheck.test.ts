import assert from 'node:assert/strict';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { run, skipWithout } from './support.js';

// Every shell script under deploy/ and scripts/ passes shellcheck (all severities) and is strict.
function scripts(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return scripts(path);
    return name.endsWith('.sh') ? [path] : [];
  });
}

test('shellcheck: every script under deploy/ and scripts/', { skip: skipWithout('shellcheck') }, () => {
  const files = [...scripts('deploy'), ...scripts('scripts')];
  assert.ok(files.includes('deploy/server/bootstrap.sh'));
  const result = run('shellcheck', ['--severity=style', '--external-sources', ...files]);
  assert.equal(result.status, 0, result.output);
});
