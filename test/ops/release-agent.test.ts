import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { cpus as cpuList, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { quantile } from '../../src/lib/histogram.js';
import { contentHash } from '../../src/ops/delivery/artifact.js';
import { parseMetrics, windowStats } from '../../src/ops/delivery/watch.js';

/**
 * scripts/release-agent.sh on its own (run locally, as the deployer runs it over SSH): the atomic
 * switch under a reader in a loop, the deploy lock and its staleness rule, retention by name,
 * installs that refuse a corrupt artifact, and failing commands that fail. The whole sequence over
 * real SSH is test/ops/deploy-launch.test.ts.
 */

const agent = new URL('../../scripts/release-agent.sh', import.meta.url).pathname;

function run(dir: string, ...args: string[]) {
  const result = spawnSync('bash', [agent, dir, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: result.status ?? 1, stdout: result.stdout, stderr: result.stderr };
}

const ids = [
  '20261201T090000Z-aaaaaaa',
  '20261201T100000Z-bbbbbbb',
  '20261201T110000Z-ccccccc',
  '20261201T120000Z-ddddddd',
  '20261201T130000Z-eeeeeee',
  '20261201T140000Z-fffffff',
  '20261201T150000Z-1234567',
];

describe('release-agent.sh', () => {
  let dir: string;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'shipshape-agent-'));
    for (const id of ids) {
      mkdirSync(join(dir, 'releases', id, 'dist'), { recursive: true });
      writeFileSync(join(dir, 'releases', id, 'dist', 'marker'), id);
      writeFileSync(
        join(dir, 'releases', id, 'release.json'),
        `${JSON.stringify({ id, version: id.slice(-3) })}\n`,
      );
    }
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('the switch is atomic: a reader resolving current in a loop during 100 switches never fails', async () => {
    assert.equal(run(dir, 'switch', ids[0] as string).code, 0);
    const stop = join(dir, 'stop-reader');
    // The reader opens a file through the link, as a worker starting from `current` would.
    const reader = spawn(
      'bash',
      [
        '-c',
        `n=0; f=0; while [ ! -e "$1" ]; do cat "$2/current/dist/marker" >/dev/null 2>&1 || f=$((f+1)); n=$((n+1)); done; echo "$n $f"`,
        'reader',
        stop,
        dir,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let output = '';
    reader.stdout.setEncoding('utf8').on('data', (c: string) => {
      output += c;
    });
    const done = new Promise((resolve) => reader.once('close', resolve));
    for (let i = 0; i < 100; i++) {
      const r = run(dir, 'switch', ids[i % 2] as string, 'test');
      assert.equal(r.code, 0, r.stderr);
    }
    writeFileSync(stop, '');
    await done;
    const [reads, failures] = output.trim().split(' ').map(Number);
    console.log(`atomic switch: ${reads} reads during 100 switches, ${failures} failed`);
    assert.ok((reads ?? 0) > 100, `the reader ran (${reads} reads)`);
    assert.equal(failures, 0);
    assert.equal(readFileSync(join(dir, 'releases.log'), 'utf8').trim().split('\n').length, 101);
  });

  test('a failing command fails: unknown release, unknown command, bad id — non-zero, nothing changed', () => {
    const before = readFileSync(join(dir, 'current', 'dist', 'marker'), 'utf8');
    for (const args of [
      ['switch', '20991231T000000Z-0000000'],
      ['switch', '../../etc'],
      ['frobnicate'],
      ['install', ids[1] as string],
    ]) {
      const r = run(dir, ...args);
      assert.notEqual(r.code, 0, args.join(' '));
      assert.match(r.stderr, /release-agent: /);
    }
    assert.equal(readFileSync(join(dir, 'current', 'dist', 'marker'), 'utf8'), before);
    assert.notEqual(run('/nonexistent/app', 'status').code, 0);
  });

  test('the lock: one holder; a fresh heartbeat holds; only a stale one is reclaimed; only the holder releases', () => {
    const a = 'a'.repeat(32);
    const b = 'b'.repeat(32);
    assert.equal(run(dir, 'lock', 'acquire', a, '30', 'alice@ci', 'abc123').code, 0);
    const held = run(dir, 'lock', 'acquire', b, '30', 'bob@laptop', 'def456');
    assert.equal(held.code, 75);
    assert.match(held.stdout, /^held\towner=alice@ci commit=abc123 started=\S+ \theartbeat \d+s ago/);
    assert.equal(run(dir, 'lock', 'heartbeat', b).code, 75, 'not the holder');
    assert.equal(run(dir, 'lock', 'release', b).code, 75, 'not the holder');
    assert.equal(run(dir, 'lock', 'heartbeat', a).code, 0);
    // The holder died: its heartbeat stops. 20 s old with staleness 30 s still holds…
    const beat = join(dir, '.deploy-lock', 'heartbeat');
    const at = (secondsAgo: number) => new Date(Date.now() - secondsAgo * 1000);
    utimesSync(beat, at(20), at(20));
    assert.equal(run(dir, 'lock', 'acquire', b, '30', 'bob@laptop', 'def456').code, 75);
    // …40 s old is stale: reclaimed, and said so.
    utimesSync(beat, at(40), at(40));
    const reclaimed = run(dir, 'lock', 'acquire', b, '30', 'bob@laptop', 'def456');
    assert.equal(reclaimed.code, 0, reclaimed.stderr);
    assert.match(reclaimed.stdout, /^reclaimed\towner=alice@ci .*\theartbeat 4\ds ago \(stale after 30s\)/);
    assert.equal(run(dir, 'lock', 'heartbeat', a).code, 75, 'the old holder learns it lost the lock');
    assert.equal(run(dir, 'lock', 'release', b).code, 0);
    assert.equal(existsSync(join(dir, '.deploy-lock')), false);
    assert.match(readFileSync(join(dir, 'releases.log'), 'utf8'), /lock reclaimed from owner=alice@ci/);
  });

  test('install refuses a corrupt artifact and one whose dependencies are missing; nothing lands in releases/', () => {
    const id = '20261202T000000Z-abcdef0';
    const incoming = join(dir, 'releases', `.incoming-${id}`);
    mkdirSync(join(incoming, 'dist'), { recursive: true });
    writeFileSync(join(incoming, 'dist', 'main.js'), 'console.log("v9")\n');
    const hash = contentHash(incoming);
    const manifest = (h: string) =>
      writeFileSync(
        join(incoming, 'release.json'),
        `${JSON.stringify({ id, contentHash: h, depsHash: 'f'.repeat(64), nodeAbi: process.versions.modules })}\n`,
      );
    manifest(hash);
    writeFileSync(join(incoming, 'dist', 'main.js'), 'console.log("tampered")\n');
    const corrupt = run(dir, 'install', id);
    assert.equal(corrupt.code, 1);
    assert.match(corrupt.stderr, /content hash mismatch .*the artifact is corrupt/);
    writeFileSync(join(incoming, 'dist', 'main.js'), 'console.log("v9")\n');
    const noDeps = run(dir, 'install', id);
    assert.equal(noDeps.code, 1);
    assert.match(noDeps.stderr, /dependencies f{64} are not on this server/);
    assert.equal(existsSync(join(dir, 'releases', id)), false);
  });

  test('retention keeps the newest by name (not by mtime), plus current and the last good release', () => {
    // Old releases touched last: an mtime-ordered cleanup (Capistrano's ls -xt) would keep them.
    for (const [i, id] of ids.entries()) {
      const t = new Date(Date.now() - i * 60_000);
      utimesSync(join(dir, 'releases', id), t, t);
    }
    assert.equal(run(dir, 'switch', ids[1] as string).code, 0);
    assert.equal(run(dir, 'mark-good', ids[2] as string).code, 0);
    const pruned = run(dir, 'prune', '3');
    assert.equal(pruned.code, 0, pruned.stderr);
    const left = ids.filter((id) => existsSync(join(dir, 'releases', id)));
    assert.deepEqual(left, [ids[1], ids[2], ids[4], ids[5], ids[6]]);
    assert.match(pruned.stdout, new RegExp(`pruned\t${ids[3]}`));
    assert.equal(existsSync(join(dir, 'releases', `.incoming-20261202T000000Z-abcdef0`)), false);
  });
});

describe('release-agent.sh: how many workers ready, metrics and health probe', () => {
  // Worker i answers on METRICS_PORT + i. Port 1 and up: nothing listens there, so curl is refused at
  // once; what counts is how many workers each command names.
  let app: string;
  // PM2 (God.js) counts os.cpus(); the agent asks the same Node.
  const cpus = cpuList().length;
  const id = '20261201T090000Z-aaaaaaa';

  before(() => {
    app = mkdtempSync(join(tmpdir(), 'shipshape-agent-workers-'));
    mkdirSync(join(app, 'releases', id, 'node_modules', 'pm2', 'bin'), { recursive: true });
    symlinkSync(join('releases', id), join(app, 'current'));
    mkdirSync(join(app, 'shared', 'pm2'), { recursive: true });
  });
  after(() => rmSync(app, { recursive: true, force: true }));

  /** shared/.env with these lines (PM2_INSTANCES among them or not). */
  const envWith = (...lines: string[]) =>
    writeFileSync(
      join(app, 'shared', '.env'),
      [`NODE_BIN=${process.execPath}`, 'METRICS_PORT=1', 'HOST=127.0.0.1', ...lines, ''].join('\n'),
      { mode: 0o600 },
    );
  const counts = () => {
    const ready = run(app, 'ready');
    const metrics = run(app, 'metrics');
    const health = run(app, 'health');
    return {
      ready: (ready.stdout.match(/^worker\t/gm) ?? []).length,
      metrics: (metrics.stdout.match(/^### worker /gm) ?? []).length,
      health: (health.stdout.match(/^ready\t/gm) ?? []).length,
      codes: [ready.code, metrics.code, health.code],
      stderr: ready.stderr + metrics.stderr + health.stderr,
    };
  };
  const all = (n: number) => ({ ready: n, metrics: n, health: n });

  test('PM2_INSTANCES as PM2 resolves it: max and unset (the ecosystem default) → one per CPU, 0 too; -1 → CPUs − 1 (at least 1); 2 → 2', () => {
    assert.ok(cpus >= 1);
    const ecosystem = readFileSync(new URL('../../deploy/pm2/ecosystem.config.cjs', import.meta.url), 'utf8');
    assert.match(
      ecosystem,
      /const instances = process\.env\.PM2_INSTANCES \|\| 'max';/,
      'the default the agent follows',
    );
    for (const [lines, want] of [
      [['PM2_INSTANCES=max'], cpus],
      [[], cpus],
      [['PM2_INSTANCES='], cpus],
      [['PM2_INSTANCES=0'], cpus],
      [['PM2_INSTANCES=-1'], Math.max(1, cpus - 1)],
      [[`PM2_INSTANCES=-${cpus + 3}`], 1],
      [['PM2_INSTANCES=2'], 2],
      [['PM2_INSTANCES=1'], 1],
    ] as Array<[string[], number]>) {
      envWith(...lines);
      const got = counts();
      const { codes, stderr, ...named } = got;
      assert.deepEqual(named, all(want), `${lines.join(' ') || 'unset'}: ${stderr}`);
      // Nothing listens: ready fails for each worker (its exit is the number not ready); the others succeed.
      assert.deepEqual(codes, [want, 0, 0], `${lines.join(' ') || 'unset'}: ${stderr}`);
    }
  });

  test('a PM2_INSTANCES that is no count stops each command with the reason (not an arithmetic error, not a guess)', () => {
    for (const spec of ['many', '2.5', '3x', '-']) {
      envWith(`PM2_INSTANCES=${spec}`);
      for (const cmd of ['ready', 'metrics', 'health']) {
        const r = run(app, cmd);
        assert.equal(r.code, 1, `${spec} ${cmd}`);
        assert.match(
          r.stderr,
          new RegExp(
            `release-agent: PM2_INSTANCES=${spec.replace('.', '\\.')} in shared/\\.env: expected a number of workers, max`,
          ),
          `${spec} ${cmd}`,
        );
        assert.doesNotMatch(r.stderr, /unbound variable|syntax error/);
      }
    }
  });

  test("with PM2's daemon up, its list wins: the app's workers as PM2 runs them (an autoscaler may have added some)", () => {
    envWith('PM2_INSTANCES=1');
    // A stand-in for `pm2 jlist`: a notice line, then the list (3 workers of this app, one of another).
    const list = [0, 1, 2]
      .map((i) => ({ name: 'shipshape', pm2_env: { NODE_APP_INSTANCE: i } }))
      .concat([{ name: 'shipshape-worker', pm2_env: { NODE_APP_INSTANCE: 0 } }]);
    writeFileSync(
      join(app, 'releases', id, 'node_modules', 'pm2', 'bin', 'pm2'),
      `if (process.argv[2] !== 'jlist') process.exit(9);\nconsole.log('>>>> In-memory PM2 is out-of-date');\nconsole.log(${JSON.stringify(JSON.stringify(list))});\n`,
    );
    const home = join(app, 'shared', 'pm2');
    try {
      // No daemon (no socket, no live pid): the file's count; `pm2 jlist` would start one.
      assert.deepEqual(counts().ready, 1);
      // A live pid (this process) and the daemon's socket.
      writeFileSync(join(home, 'pm2.pid'), String(process.pid));
      const socket = createServer().listen(join(home, 'rpc.sock'));
      try {
        const { codes, stderr, ...named } = counts();
        assert.deepEqual(named, all(3), stderr);
        envWith('PM2_INSTANCES=1', 'PM2_APP_NAME=other');
        assert.equal(counts().ready, 1, "PM2 does not run this app: the file's count");
      } finally {
        socket.close();
      }
    } finally {
      rmSync(join(home, 'pm2.pid'), { force: true });
      rmSync(join(app, 'releases', id, 'node_modules', 'pm2', 'bin', 'pm2'), { force: true });
    }
  });
});

describe("release-agent.sh metrics: the token from the service's settings, never on a command line", () => {
  test('METRICS_TOKEN or METRICS_TOKEN_FILE reaches /metrics as a bearer header, passed to curl as a header file', async () => {
    const app = mkdtempSync(join(tmpdir(), 'shipshape-agent-token-'));
    const id = '20261201T090000Z-bbbbbbb';
    mkdirSync(join(app, 'releases', id), { recursive: true });
    symlinkSync(join('releases', id), join(app, 'current'));
    mkdirSync(join(app, 'shared', 'pm2'), { recursive: true });
    // A /metrics of its own process (the agent runs synchronously here): one series for the right
    // token, 401 otherwise.
    const server = spawn(
      process.execPath,
      [
        '-e',
        `require('node:http').createServer((q, r) => {
           if (q.headers.authorization !== 'Bearer s3cret-token') { r.statusCode = 401; return r.end(); }
           r.end('process_start_time_seconds 1700000000\\n');
         }).listen(0, '127.0.0.1', function () { console.log(this.address().port); });`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    try {
      const port = await new Promise<number>((resolve) =>
        server.stdout.once('data', (chunk) => resolve(Number(String(chunk).trim()))),
      );
      const env = (...lines: string[]) =>
        writeFileSync(
          join(app, 'shared', '.env'),
          [`NODE_BIN=${process.execPath}`, `METRICS_PORT=${port}`, 'PM2_INSTANCES=1', ...lines, ''].join(
            '\n',
          ),
          { mode: 0o600 },
        );
      const scraped = () => run(app, 'metrics').stdout.includes('process_start_time_seconds 1700000000');
      env('METRICS_TOKEN=s3cret-token');
      assert.ok(scraped(), 'METRICS_TOKEN');
      writeFileSync(join(app, 'shared', 'metrics-token'), 's3cret-token\n', { mode: 0o600 });
      env(`METRICS_TOKEN_FILE=${join(app, 'shared', 'metrics-token')}`);
      assert.ok(scraped(), 'METRICS_TOKEN_FILE');
      env('METRICS_TOKEN=wrong');
      assert.ok(!scraped(), 'a wrong token gets nothing');
      // Never in curl's arguments: the header comes from a file descriptor.
      assert.doesNotMatch(readFileSync(agent, 'utf8'), /-H "authorization: Bearer \$/);
    } finally {
      server.kill();
      rmSync(app, { recursive: true, force: true });
    }
  });
});

describe('canary watch arithmetic', () => {
  const scrape = (ok: number, errors: number, fast: number, slow: number, starts: number[]) =>
    [
      '### worker 0',
      `http_requests_total{method="GET",route="/api/products/:id",status_code="200"} ${ok}`,
      `http_requests_total{method="POST",route="/api/orders",status_code="503"} ${errors}`,
      `http_requests_total{method="GET",route="/ready",status_code="503"} 999`,
      `http_request_duration_seconds_bucket{le="0.05",method="GET",route="/api/products/:id",status_code="200"} ${fast}`,
      `http_request_duration_seconds_bucket{le="1",method="GET",route="/api/products/:id",status_code="200"} ${fast + slow}`,
      `http_request_duration_seconds_bucket{le="+Inf",method="GET",route="/api/products/:id",status_code="200"} ${fast + slow}`,
      `process_start_time_seconds ${starts[0]}`,
      '### worker 1',
      ...(starts[1] === undefined ? [] : [`process_start_time_seconds ${starts[1]}`]),
    ].join('\n');

  test('deltas over the window, probes left out, p95 interpolated, a vanished worker counted', () => {
    const start = parseMetrics(scrape(100, 0, 100, 0, [1700000000, 1700000001]));
    const end = parseMetrics(scrape(300, 10, 290, 10, [1700000000]));
    assert.equal(start.requests, 100);
    const stats = windowStats(start, end);
    assert.equal(stats.requests, 210);
    assert.equal(stats.errors, 10);
    assert.equal(stats.restarts, 1, 'worker 1 stopped answering');
    // 200 new observations: 190 ≤ 50 ms, 10 in (50 ms, 1 s]; rank 190 is the last fast one.
    assert.ok(stats.p95 !== null && Math.abs(stats.p95 - 0.05) < 1e-9, String(stats.p95));
    assert.equal(quantile(0.95, [0.1, Number.POSITIVE_INFINITY], [0, 0]), null);
  });
});
