import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { promisify } from 'node:util';
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

  test('PM2 destination: the lines written just before process.exit() reach the files', async () => {
    const out = join(dir, 'exit', 'out.log');
    const combined = join(dir, 'exit', 'combined.log');
    const module = new URL('../../src/infra/pm2-log.ts', import.meta.url).href;
    // A PM2 worker's last lines (for example the job worker's "stopped") are logged and then the
    // process exits at once: nothing may be left to an asynchronous write.
    const script = `
      const { createPm2Destination } = await import(${JSON.stringify(module)});
      const destination = createPm2Destination({ files: ${JSON.stringify([out, combined])}, dateFormat: 'YYYY' });
      // The only thread of libuv's pool is busy (as on a loaded machine), so an asynchronous write
      // started now could only run after the exit.
      (await import('node:crypto')).pbkdf2('x', 'y', 500000, 32, 'sha256', () => {});
      for (let i = 0; i < 100; i++) destination.write('{"n":' + i + '}\\n');
      process.exit(0);`;
    await promisify(execFile)(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      env: { ...process.env, UV_THREADPOOL_SIZE: '1' },
    });
    for (const file of [out, combined]) {
      const lines = readFileSync(file, 'utf8').trimEnd().split('\n');
      assert.equal(lines.length, 100, file);
      assert.match(lines[99] ?? '', /^\d{4}: \{"n":99\}$/);
    }
  });
});
