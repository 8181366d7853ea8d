import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { freePort } from '../harness/ports.js';
import {
  asPostgresUser,
  pgBinDir,
  startThrowawayPostgres,
  type ThrowawayPostgres,
} from '../harness/postgres.js';
import { inCi } from '../harness/services.js';
import { waitUntil } from '../harness/wait.js';

/**
 * The point-in-time recovery drill (decision 0072) with the shipped deploy/pgbackrest/pgbackrest.conf
 * and deploy/postgres/archiving.conf on a cluster of our own: a full encrypted backup, order A
 * committed, the time T, order B committed; the cluster stopped and restored by
 * `npm run db:restore -- --pitr --target-time T` → A is there, B is not, and PostgreSQL's log says
 * recovery stopped before B's commit (the proof that the target was reached, not just a restore).
 * First the same point restored into an empty directory beside it, started as a check cluster of
 * its own with archiving off; then the stopped cluster's own directory, refused without --force
 * (nothing touched), restored in place with it.
 */

const root = fileURLToPath(new URL('../../', import.meta.url));
const hasPgbackrest = (() => {
  try {
    execFileSync('sh', ['-c', 'command -v pgbackrest'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();
const missing = hasPgbackrest ? false : 'pgbackrest is not installed: scripts/install-ops-tools.sh';
if (missing && inCi) throw new Error(`CI requires ${missing}`);

/** The shipped file with this host's paths: each `key=value` named is replaced in its section. */
function renderIni(text: string, overrides: Record<string, Record<string, string>>): string {
  let section = '';
  const seen = new Set<string>();
  const out = text.split('\n').map((line) => {
    const header = /^\[(.+)\]$/.exec(line.trim());
    if (header) {
      section = header[1] as string;
      return line;
    }
    const key = /^([\w-]+)=/.exec(line)?.[1];
    const value = key === undefined ? undefined : overrides[section]?.[key];
    if (key === undefined || value === undefined) return line;
    seen.add(`${section}.${key}`);
    return `${key}=${value}`;
  });
  for (const [name, keys] of Object.entries(overrides))
    for (const key of Object.keys(keys))
      if (!seen.has(`${name}.${key}`)) throw new Error(`${name}.${key} is not in the shipped file`);
  return out.join('\n');
}

function asPostgres(args: string[]): string {
  const [file, argv] =
    process.getuid?.() === 0
      ? ['runuser', ['-u', 'postgres', '--', ...args]]
      : [args[0] ?? '', args.slice(1)];
  try {
    return execFileSync(file, argv, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    throw new Error(`${args.join(' ')} failed:\n${e.stdout ?? ''}${e.stderr ?? ''}`);
  }
}

async function query<T extends pg.QueryResultRow>(
  url: string,
  text: string,
  values: unknown[] = [],
): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(text, values)).rows;
  } finally {
    await client.end();
  }
}

/** `npm run db:restore` as a process (through tsx): its exit and everything it printed. */
function restoreCli(args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) =>
    execFile(
      process.execPath,
      ['--import', 'tsx', join(root, 'src/cli/db-restore.ts'), ...args],
      { env: { ...process.env, NODE_ENV: 'test' }, encoding: 'utf8', timeout: 300_000 },
      (error, stdout, stderr) => resolve({ code: error ? 1 : 0, out: `${stdout}${stderr}` }),
    ),
  );
}

describe('point-in-time recovery with pgBackRest', { skip: missing }, () => {
  let cluster: ThrowawayPostgres;
  let dir: string;
  let config: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'shipshape-pgbackrest-'));
    for (const sub of ['repo', 'spool', 'log', 'conf.d']) mkdirSync(join(dir, sub));
    config = join(dir, 'pgbackrest.conf');
    const tool = `pgbackrest --config=${config} --config-include-path=${join(dir, 'conf.d')}`;
    // The shipped archiving settings, with the command pointed at this test's configuration.
    const archiving = readFileSync(join(root, 'deploy/postgres/archiving.conf'), 'utf8')
      .split('\n')
      .filter((line) => line.trim() !== '' && !line.startsWith('#'))
      .map((line) => line.replace("'pgbackrest ", `'${tool} `));
    assert.ok(archiving.some((line) => line.startsWith('archive_command')));
    cluster = await startThrowawayPostgres({ conf: archiving });
    writeFileSync(
      config,
      renderIni(readFileSync(join(root, 'deploy/pgbackrest/pgbackrest.conf'), 'utf8'), {
        global: {
          'repo1-path': join(dir, 'repo'),
          'spool-path': join(dir, 'spool'),
          'log-path': join(dir, 'log'),
        },
        shipshape: {
          'pg1-path': cluster.dataDir,
          'pg1-port': String(cluster.port),
          'pg1-socket-path': cluster.dir,
        },
      }),
    );
    // The passphrase beside the file, as production keeps it (conf.d/cipher.conf, mode 0600).
    writeFileSync(
      join(dir, 'conf.d', 'cipher.conf'),
      `[global]\nrepo1-cipher-pass=${randomBytes(36).toString('base64')}\n`,
      { mode: 0o600 },
    );
    if (process.getuid?.() === 0) {
      const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
      for (const path of ['', 'repo', 'spool', 'log', 'conf.d', 'conf.d/cipher.conf', 'pgbackrest.conf'])
        chownSync(join(dir, path), uid, 0);
    }
  });

  after(() => {
    cluster?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  test('restored to T: the order before T is there, the one after is not', async () => {
    const pgbackrest = (...args: string[]) =>
      asPostgres([
        'pgbackrest',
        `--config=${config}`,
        `--config-include-path=${join(dir, 'conf.d')}`,
        '--stanza=shipshape',
        ...args,
      ]);
    pgbackrest('stanza-create');
    pgbackrest('check');
    // The full backup as the schedule takes it: the shipped script (systemd/pgbackrest-backup@.service),
    // which records its success for node-exporter's textfile collector.
    mkdirSync(join(dir, 'textfile'));
    if (process.getuid?.() === 0)
      chownSync(join(dir, 'textfile'), Number(execFileSync('id', ['-u', 'postgres']).toString().trim()), 0);
    // Installed beside the configuration, as production installs it: the checkout itself may not
    // be readable by postgres (a clone in a mode-0700 temporary directory).
    const script = join(dir, 'pgbackrest-backup.sh');
    copyFileSync(join(root, 'deploy/pgbackrest/pgbackrest-backup.sh'), script);
    chmodSync(script, 0o755);
    const before = Math.floor(Date.now() / 1000);
    asPostgres([
      'env',
      `PGBACKREST_CONFIG=${config}`,
      `PGBACKREST_CONFIG_INCLUDE_PATH=${join(dir, 'conf.d')}`,
      `SHIPSHAPE_TEXTFILE_DIR=${join(dir, 'textfile')}`,
      script,
      'full',
    ]);
    const recorded = readFileSync(join(dir, 'textfile', 'pgbackrest-full.prom'), 'utf8');
    const at = Number(
      /^backup_last_success_timestamp_seconds\{tool="pgbackrest",stanza="shipshape",type="full"\} (\d+)$/m.exec(
        recorded,
      )?.[1],
    );
    assert.ok(at >= before && at <= Date.now() / 1000 + 1, recorded);
    // A differential as the schedule takes it with more than one repository (each named in turn).
    asPostgres([
      'env',
      `PGBACKREST_CONFIG=${config}`,
      `PGBACKREST_CONFIG_INCLUDE_PATH=${join(dir, 'conf.d')}`,
      `SHIPSHAPE_TEXTFILE_DIR=${join(dir, 'textfile')}`,
      'SHIPSHAPE_PGBACKREST_REPOS=1',
      script,
      'diff',
    ]);
    assert.match(readFileSync(join(dir, 'textfile', 'pgbackrest-diff.prom'), 'utf8'), /type="diff"\} \d+$/m);
    const info = pgbackrest('info');
    assert.match(info, /status: ok/);
    assert.match(info, /cipher: aes-256-cbc/);
    assert.match(info, /full backup:/);
    assert.match(info, /diff backup:/);

    const url = cluster.url;
    // pgBackRest records a backup's stop time in whole seconds, and restores to T only from a
    // backup that stopped before T: let PostgreSQL's clock pass that second first.
    const [set] = JSON.parse(pgbackrest('info', '--output=json')) as Array<{
      backup: Array<{ timestamp: { stop: number } }>;
    }>;
    const stop = set?.backup.at(-1)?.timestamp.stop ?? 0;
    assert.ok(stop > 0, 'the backup has a stop time');
    await waitUntil(
      async () =>
        Number(
          (await query<{ now: string }>(url, 'SELECT extract(epoch FROM clock_timestamp()) AS now'))[0]?.now,
        ) >
        stop + 1.5,
      { what: 'the clock past the backup', intervalMs: 100 },
    );
    await query(url, 'CREATE TABLE drill_orders (id int PRIMARY KEY, note text NOT NULL)');
    await query(url, "INSERT INTO drill_orders VALUES (1, 'before T')");
    // T after A's commit, as PostgreSQL reckons time, with its zone offset; then B, strictly later.
    const [mark] = await query<{ t: string }>(
      url,
      "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00' AS t",
    );
    const target = mark?.t ?? '';
    await new Promise((resolve) => setTimeout(resolve, 50));
    await query(url, "INSERT INTO drill_orders VALUES (2, 'after T')");
    // Every WAL segment up to B archived (check switches the segment and waits for it).
    pgbackrest('check');

    // A check first, while the cluster runs: the point restored into an empty directory beside it.
    const check = join(dir, 'check');
    mkdirSync(check, { mode: 0o700 });
    if (process.getuid?.() === 0)
      chownSync(check, Number(execFileSync('id', ['-u', 'postgres']).toString().trim()), 0);
    const copy = await restoreCli([
      '--pitr',
      '--target-time',
      target,
      '--config',
      config,
      '--pg-path',
      check,
    ]);
    assert.equal(copy.code, 0, copy.out);
    assert.match(copy.out, /archiving is off in the restored cluster/);
    const checkPort = await freePort();
    const pgCtl = (...args: string[]) => asPostgresUser(join(pgBinDir(), 'pg_ctl'), ['-D', check, ...args]);
    const checkLog = join(dir, 'check.log');
    const startedCheck = pgCtl(
      ...[
        '-o',
        `-p ${checkPort} -k ${dir} -c listen_addresses=127.0.0.1`,
        '-l',
        checkLog,
        '-w',
        '-t',
        '120',
        'start',
      ],
    );
    assert.equal(startedCheck.status, 0, startedCheck.output);
    try {
      const checkUrl = `postgres://postgres@127.0.0.1:${checkPort}/postgres`;
      await waitUntil(
        async () =>
          (await query<{ r: boolean }>(checkUrl, 'SELECT pg_is_in_recovery() AS r'))[0]?.r === false,
        { timeoutMs: 120_000, what: 'the check cluster recovered and promoted' },
      );
      assert.deepEqual(await query(checkUrl, 'SELECT id, note FROM drill_orders ORDER BY id'), [
        { id: 1, note: 'before T' },
      ]);
      // Promoted on a new timeline: it must not push that into the primary's repository.
      assert.equal(
        (await query<{ a: string }>(checkUrl, "SELECT current_setting('archive_mode') AS a"))[0]?.a,
        'off',
      );
      assert.match(readFileSync(checkLog, 'utf8'), /recovery stopping before commit of transaction \d+/);
    } finally {
      pgCtl('-m', 'immediate', '-w', '-t', '120', 'stop');
      rmSync(check, { recursive: true, force: true });
    }
    // The primary still runs on its own data, B included.
    assert.equal((await query(url, 'SELECT id FROM drill_orders')).length, 2);

    cluster.stop();
    // Its own data directory holds a cluster: refused without --force, and nothing is touched.
    const autoConf = join(cluster.dataDir, 'postgresql.auto.conf');
    const untouched = readFileSync(autoConf, 'utf8');
    const refused = await restoreCli(['--pitr', '--target-time', target, '--config', config]);
    assert.equal(refused.code, 1, refused.out);
    assert.ok(
      refused.out.includes(`${cluster.dataDir} is not empty (the data directory of a PostgreSQL `),
      refused.out,
    );
    assert.match(refused.out, /would overwrite it in place .*Pass --force/);
    assert.equal(readFileSync(autoConf, 'utf8'), untouched, 'no recovery settings written');
    assert.ok(!existsSync(join(cluster.dataDir, 'recovery.signal')), 'no recovery.signal');

    const started = performance.now();
    const restore = await restoreCli([
      '--pitr',
      '--target-time',
      target,
      '--config',
      config,
      '--pg-path',
      cluster.dataDir,
      '--force',
    ]);
    assert.equal(restore.code, 0, restore.out);
    assert.match(restore.out, /in place/);
    assert.doesNotMatch(restore.out, /archiving is off/);
    cluster.start();
    await waitUntil(
      async () => (await query<{ r: boolean }>(url, 'SELECT pg_is_in_recovery() AS r'))[0]?.r === false,
      { timeoutMs: 120_000, what: 'recovery finished and the cluster promoted' },
    );
    const seconds = (performance.now() - started) / 1000;
    const rows = await query<{ id: number; note: string }>(
      url,
      'SELECT id, note FROM drill_orders ORDER BY id',
    );
    assert.deepEqual(rows, [{ id: 1, note: 'before T' }]);
    const log = readFileSync(join(cluster.dir, 'log'), 'utf8');
    assert.match(log, /recovery stopping before commit of transaction \d+, time /);
    assert.match(log, /last completed transaction was at log time /);
    console.log(`PITR drill: restored to ${target} and promoted in ${seconds.toFixed(1)} s`);
    // The restored cluster takes writes again (promoted, not paused at the target).
    await query(url, "INSERT INTO drill_orders VALUES (3, 'after the restore')");
  });

  test('the off-host repo2, uncommented as the file says, is a configuration pgBackRest takes', async () => {
    const shipped = readFileSync(join(root, 'deploy/pgbackrest/pgbackrest.conf'), 'utf8');
    const repo2 = shipped.replace(/^#(repo2-[\w-]+=)/gm, '$1');
    assert.match(shipped, /must also be off this host/i);
    assert.ok((repo2.match(/^repo2-/gm) ?? []).length >= 8, 'the commented repo2 settings');
    assert.match(repo2, /^repo2-cipher-type=aes-256-cbc$/m);
    const offHost = join(dir, 'off-host');
    mkdirSync(join(offHost, 'conf.d'), { recursive: true });
    writeFileSync(
      join(offHost, 'pgbackrest.conf'),
      renderIni(repo2, {
        global: {
          'repo1-path': join(offHost, 'repo'),
          'spool-path': join(offHost, 'spool'),
          'log-path': join(offHost, 'log'),
        },
      }),
    );
    // The secrets conf.d/cipher.conf holds, per the file's comment.
    writeFileSync(
      join(offHost, 'conf.d', 'cipher.conf'),
      '[global]\nrepo1-cipher-pass=one\nrepo2-cipher-pass=two\nrepo2-s3-key=key\nrepo2-s3-key-secret=secret\n',
    );
    // The bucket is a closed port here: every option is accepted, and repo2 is reached for.
    const port = await freePort();
    let out: string;
    try {
      out = execFileSync(
        'pgbackrest',
        [
          `--config=${join(offHost, 'pgbackrest.conf')}`,
          `--config-include-path=${join(offHost, 'conf.d')}`,
          '--stanza=shipshape',
          '--repo2-s3-endpoint=127.0.0.1',
          `--repo2-storage-port=${port}`,
          '--repo2-s3-uri-style=path',
          '--io-timeout=1',
          '--log-level-file=off',
          'info',
        ],
        { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
      );
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string };
      out = `${e.stdout ?? ''}${e.stderr ?? ''}`;
    }
    assert.doesNotMatch(out, /invalid option|requires option/i);
    assert.match(out, /repo2: error/);
    assert.match(out, new RegExp(`127\\.0\\.0\\.1:${port}`));
  });

  test('a target time without a zone offset is refused before anything is touched', async () => {
    const run = await restoreCli(['--pitr', '--target-time', '2026-12-02 14:00:00']);
    assert.equal(run.code, 1);
    assert.match(run.out, /needs a zone offset/);
  });
});
