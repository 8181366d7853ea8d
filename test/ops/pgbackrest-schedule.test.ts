import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { inCi } from '../harness/services.js';

/**
 * The pgBackRest schedule (decision 0093), checked by the tools that will run it: systemd's own
 * `systemd-analyze verify` on every unit (the script's installed path pointed at the checkout's),
 * `systemd-analyze calendar` on each timer (a full backup on Sundays, a diff on each other day),
 * shellcheck on the script, and the script run for real: a failed pgbackrest records no success.
 * The successful run is the PITR drill's full backup (test/db/pitr.test.ts runs this script).
 */
const root = fileURLToPath(new URL('../../', import.meta.url));
const dir = join(root, 'deploy', 'pgbackrest');
const unitsDir = join(dir, 'systemd');
const script = join(dir, 'pgbackrest-backup.sh');
const installedScript = '/usr/local/lib/shipshape/pgbackrest-backup.sh';

const has = (tool: string) => spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;
const missing = ['systemd-analyze', 'shellcheck', 'pgbackrest'].filter((t) => !has(t));
if (missing.length > 0 && inCi)
  throw new Error(`CI requires ${missing.join(', ')}: scripts/install-ops-tools.sh`);
const skip = missing.length > 0 ? `not installed: ${missing.join(', ')}` : false;

const work = mkdtempSync(join(tmpdir(), 'shipshape-pgbackrest-units-'));
after(() => rmSync(work, { recursive: true, force: true }));

function timerSpec(file: string): { calendar: string; unit: string } {
  const text = readFileSync(join(unitsDir, file), 'utf8');
  return {
    calendar: /^OnCalendar=(.+)$/m.exec(text)?.[1] ?? '',
    unit: /^Unit=(.+)$/m.exec(text)?.[1] ?? '',
  };
}

describe('the pgBackRest schedule (deploy/pgbackrest/systemd)', { skip }, () => {
  test('systemd-analyze verify: every unit loads, without a warning', () => {
    for (const file of readdirSync(unitsDir))
      writeFileSync(
        join(work, file),
        readFileSync(join(unitsDir, file), 'utf8').replaceAll(installedScript, script),
      );
    const units = [
      ...readdirSync(unitsDir).filter((f) => !f.includes('@')),
      // The template as the timers start it.
      'pgbackrest-backup@full.service',
      'pgbackrest-backup@diff.service',
    ];
    for (const unit of units) {
      const result = spawnSync('systemd-analyze', ['verify', '--man=no', join(work, unit)], {
        encoding: 'utf8',
        cwd: work,
      });
      assert.equal(result.status, 0, `${unit}: ${result.stdout}${result.stderr}`);
      assert.equal(result.stderr.trim(), '', `${unit}: ${result.stderr}`);
    }
    // And the unit really names the shipped script's installed path.
    assert.match(
      readFileSync(join(unitsDir, 'pgbackrest-backup@.service'), 'utf8'),
      /^ExecStart=\/usr\/local\/lib\/shipshape\/pgbackrest-backup\.sh %i$/m,
    );
  });

  test('full weekly on Sunday, diff on each other day, verify weekly: one backup a night', () => {
    const nights = new Map<string, string>();
    for (const [file, type] of [
      ['pgbackrest-full.timer', 'full'],
      ['pgbackrest-diff.timer', 'diff'],
    ] as const) {
      const { calendar, unit } = timerSpec(file);
      assert.equal(unit, `pgbackrest-backup@${type}.service`);
      const result = spawnSync('systemd-analyze', ['calendar', '--iterations=14', calendar], {
        encoding: 'utf8',
        env: { ...process.env, TZ: 'UTC' },
      });
      assert.equal(result.status, 0, result.stderr);
      const days = [...result.stdout.matchAll(/(?:Next elapse|Iter\. #\d+): (\w{3}) (\S+) (\S+)/g)];
      assert.equal(days.length, 14, result.stdout);
      for (const [, weekday, date, time] of days) {
        assert.equal(time, '02:30:00', `${file}: ${date}`);
        if (date !== undefined && nights.has(date) && nights.get(date) !== type)
          assert.fail(`${date}: both a ${nights.get(date)} and a ${type} backup`);
        if (date !== undefined) nights.set(date, type);
        if (type === 'full') assert.equal(weekday, 'Sun');
        else assert.notEqual(weekday, 'Sun');
      }
    }
    const verify = timerSpec('pgbackrest-verify.timer');
    assert.equal(verify.unit, 'pgbackrest-verify.service');
    assert.match(verify.calendar, /^Wed /);
    for (const file of readdirSync(unitsDir).filter((f) => f.endsWith('.timer')))
      assert.match(
        readFileSync(join(unitsDir, file), 'utf8'),
        /^Persistent=true$/m,
        `${file}: a missed run starts at boot`,
      );
  });

  test('shellcheck passes the backup script', () => {
    const result = spawnSync('shellcheck', ['-s', 'sh', script], { encoding: 'utf8' });
    assert.equal(result.status, 0, result.stdout);
  });

  test('the script: usage errors exit 2; a failed pgbackrest fails the unit and records no success', () => {
    const usage = spawnSync(script, ['weekly'], { encoding: 'utf8' });
    assert.equal(usage.status, 2, usage.stderr);
    const textfiles = join(work, 'textfile');
    spawnSync('mkdir', ['-p', textfiles]);
    const failed = spawnSync(script, ['full'], {
      encoding: 'utf8',
      env: {
        ...process.env,
        SHIPSHAPE_TEXTFILE_DIR: textfiles,
        // A configuration naming no cluster: pgbackrest itself refuses.
        PGBACKREST_CONFIG: join(work, 'missing.conf'),
        PGBACKREST_CONFIG_INCLUDE_PATH: join(work, 'missing.d'),
        PGBACKREST_LOG_PATH: work,
        PGBACKREST_LOCK_PATH: work,
      },
    });
    assert.notEqual(failed.status, 0, `${failed.stdout}${failed.stderr}`);
    assert.match(`${failed.stdout}${failed.stderr}`, /ERROR/);
    assert.equal(existsSync(join(textfiles, 'pgbackrest-full.prom')), false);
  });
});
