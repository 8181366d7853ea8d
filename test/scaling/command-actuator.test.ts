import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { commandActuator } from '../../src/scaling/command-actuator.js';

const run = promisify(execFile);
const hook = new URL('../fixtures/scaling/hook.mjs', import.meta.url).pathname;
const root = new URL('../..', import.meta.url).pathname;
/** The CLI from its source (no dist/ build shared with other test files running at the same time). */
const cli = ['--import', 'tsx', join(root, 'src', 'cli', 'autoscale.ts')];
const dir = mkdtempSync(join(tmpdir(), 'shipshape-hook-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function stateFile(state: object): string {
  const file = join(dir, `${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(file, JSON.stringify(state));
  return file;
}

describe('command-hook actuator', () => {
  it('reads instances as JSON or a count, and scales to an absolute number', async () => {
    const file = stateFile({ count: 2, startedAt: 1234 });
    const actuator = commandActuator({ command: process.execPath, args: [hook, file] });
    assert.deepEqual(await actuator.instances(), [
      { id: 'vm-0', startedAt: 1234 },
      { id: 'vm-1', startedAt: 1234 },
    ]);
    await actuator.scaleTo(3, []);
    assert.deepEqual(JSON.parse(readFileSync(file, 'utf8')).calls, [3]);
    const bare = commandActuator({
      command: process.execPath,
      args: [hook, stateFile({ count: 2, bare: true })],
    });
    const seen = await bare.instances();
    assert.equal(seen.length, 2);
    // A bare count has no start times: warm-up runs from when the monitor first saw each one.
    assert.ok(seen.every((i) => Math.abs(i.startedAt - Date.now()) < 60_000));
  });

  it('a failing hook rejects with its exit code and stderr', async () => {
    const actuator = commandActuator({
      command: process.execPath,
      args: [hook, stateFile({ count: 1, refuse: true })],
    });
    await assert.rejects(actuator.scaleTo(2, []), /failed \(3\): quota exceeded/);
  });

  it('npm run autoscale -- --actuator command --once: one decision, as JSON, through the hook', async () => {
    const file = stateFile({ count: 1, startedAt: 0 });
    const { stdout } = await run(
      process.execPath,
      [
        ...cli,
        '--actuator',
        'command',
        '--hook',
        process.execPath,
        '--hook-arg',
        hook,
        '--hook-arg',
        file,
        '--once',
        '--min',
        '2',
        '--max',
        '3',
      ],
      { cwd: root, timeout: 120_000 },
    );
    const record = JSON.parse(stdout.trim().split('\n').at(-1) ?? '');
    assert.equal(record.action, 'scale-up');
    assert.equal(record.reason, 'below-min');
    assert.equal(record.applied, true);
    assert.deepEqual(JSON.parse(readFileSync(file, 'utf8')).calls, [2]);
  });

  it('a status file that cannot be written is logged, and the monitor carries on', async () => {
    const file = stateFile({ count: 1, startedAt: 0 });
    // A directory that does not exist: every write fails.
    const statusFile = join(dir, 'gone', 'status.json');
    const { stdout } = await run(
      process.execPath,
      [
        ...cli,
        ...['--actuator', 'command', '--hook', process.execPath, '--hook-arg', hook, '--hook-arg', file],
        ...['--status-file', statusFile, '--once', '--min', '2', '--max', '3'],
      ],
      { cwd: root, timeout: 120_000 },
    );
    const lines = stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { level?: number; msg?: string; statusFile?: string; action?: string });
    // The decision printed by --once is the line that is not a log line.
    const record = lines.find((l) => l.level === undefined) as { action: string; applied: boolean };
    assert.deepEqual([record.action, record.applied], ['scale-up', true]);
    const failure = lines.find((l) => /cannot write the status file/.test(l.msg ?? ''));
    assert.ok(failure, stdout);
    assert.equal(failure.level, 50, 'logged as an error');
    assert.equal(failure.statusFile, statusFile);
  });

  it('--cpu host is refused where the instances do not run on this machine', async () => {
    for (const actuator of [
      ['--actuator', 'command', '--hook', process.execPath],
      ['--actuator', 'digitalocean', '--do-tag', 'shop-app'],
    ])
      await assert.rejects(
        // A timeout: accepted, the monitor would run until stopped.
        run(process.execPath, [...cli, ...actuator, '--cpu', 'host'], { cwd: root, timeout: 60_000 }),
        (err: { code: number; stderr: string }) =>
          err.code === 2 &&
          /--cpu host reads this machine's \/proc\/stat: only for --actuator pm2/.test(err.stderr),
      );
  });

  it('usage errors exit 2 and say what is wrong', async () => {
    await assert.rejects(
      run(process.execPath, [...cli, '--actuator', 'pm2', '--min', '3', '--max', '2'], { cwd: root }),
      (err: { code: number; stderr: string }) =>
        err.code === 2 && /max must be a whole number ≥ min/.test(err.stderr),
    );
    await assert.rejects(
      run(process.execPath, [...cli, '--actuator', 'command'], {
        cwd: root,
      }),
      (err: { code: number; stderr: string }) => err.code === 2 && /--hook is required/.test(err.stderr),
    );
  });
});
