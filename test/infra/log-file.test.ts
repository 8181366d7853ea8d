import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { openLogFile } from '../../src/infra/log-file.js';
import { waitUntil } from '../harness/wait.js';

describe('log file (a full disk drops lines, never the service)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'shipshape-logfile-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('appends, and reopens the path after a rotation', async () => {
    const path = join(dir, 'a', 'out.log');
    const file = openLogFile(path);
    file.write('one\n');
    file.write('two\n');
    await waitUntil(() => readFileSync(path, 'utf8') === 'one\ntwo\n', { what: 'two lines written' });
    renameSync(path, `${path}.1`);
    file.reopen();
    file.write('three\n');
    await waitUntil(
      () => {
        try {
          return readFileSync(path, 'utf8') === 'three\n';
        } catch {
          return false;
        }
      },
      { what: 'the new file written' },
    );
    file.closeSync();
    assert.equal(readFileSync(`${path}.1`, 'utf8'), 'one\ntwo\n');
  });

  test('ENOSPC (/dev/full): nothing thrown, lines counted as dropped, exit not delayed; resumes when writable', async () => {
    const path = join(dir, 'full.log');
    symlinkSync('/dev/full', path);
    const file = openLogFile(path);
    for (let i = 0; i < 100; i++) file.write(`line ${i}\n`);
    let dropped = 0;
    await waitUntil(
      () => {
        dropped += file.takeDropped();
        return dropped === 100;
      },
      { what: 'every line counted as dropped' },
    );

    // Space comes back (here: the path is a real file again) and the file is reopened.
    rmSync(path);
    file.reopen();
    file.write('after\n');
    await waitUntil(
      () => {
        try {
          return readFileSync(path, 'utf8') === 'after\n';
        } catch {
          return false;
        }
      },
      { what: 'logging to resume' },
    );

    const full = openLogFile('/dev/full');
    full.write('pending\n');
    const started = Date.now();
    full.closeSync();
    assert.ok(Date.now() - started < 1000, 'one attempt at exit, no retry loop');
    file.closeSync();
  });
});
