import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { type Config, ConfigError, loadConfig, plainSecretNames } from '../config.js';
import { blockingPendingMigrations } from '../db/migrator.js';
import { createDatabase } from '../infra/database.js';
import { createLogger } from '../infra/logger.js';
import { describeDatabase, describeRedis } from '../lib/targets.js';
import { applyClusterPolicy } from './pm2-policy.js';

/**
 * `npm run pm2:start` and `npm run pm2:reload`: PM2 with the checks it cannot make itself
 * (docs/decisions/0015-pm2-wrapper.md). PM2 starts or reloads workers with whatever environment it
 * is given and reports success before they are ready: a start with a bad configuration says
 * "launched" and exits 0 while the workers crash-loop, and a reload replaces a healthy worker
 * after listen_timeout even when its successor never became ready. So, before PM2 is touched:
 *
 *  1. the environment the workers will get (this shell + the ecosystem file's env_production) must
 *     pass the service's own loadConfig(), and hold no secret in plain text (PM2 would write it
 *     into its dump: use the *_FILE variants);
 *  2. the database must answer and its schema must be current (or DATABASE_MIGRATE_ON_START set);
 *  3. a PM2 daemon this command launches gets `NODE_CLUSTER_SCHED_POLICY=none`, and a running one
 *     without it is reported (see `clusterPolicy` below);
 *
 * then PM2 starts or reloads, and the command succeeds only when every worker answers /ready on its
 * own port (METRICS_PORT + instance) — on a reload every worker PM2 runs, also those an autoscaler
 * added beyond the file's count — and the job worker app, when there is one (PM2_JOBS_WORKER), has
 * sent 'ready' on PM2's bus (it serves no /ready; PM2 marks it online after listen_timeout even
 * when it never became ready). Any failure exits non-zero with the reason in one place.
 */

const usage =
  'usage: npm run pm2:start | npm run pm2:reload   (node dist/cli/pm2.js <start|reload> [--help])';
const root = fileURLToPath(new URL('../..', import.meta.url));
const requireCjs = createRequire(import.meta.url);
const pm2Bin = join(dirname(requireCjs.resolve('pm2/package.json')), 'bin', 'pm2');

interface EcosystemApp {
  name: string;
  instances: number | 'max';
  listen_timeout: number;
  error_file: string;
  env: Record<string, string | number>;
  env_production: Record<string, string | number>;
}

class Refusal extends Error {}

function fail(message: string, code = 1): never {
  process.stderr.write(`${message}\n`);
  if (connected !== undefined) pm2Api.disconnect();
  process.exit(code);
}

function parseCommand(): 'start' | 'reload' {
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ options: { help: { type: 'boolean' } }, allowPositionals: true, strict: true });
  } catch (err) {
    fail(`pm2: ${(err as Error).message.split('\n')[0]}\n${usage}`, 2);
  }
  if (parsed.values.help === true) {
    process.stdout.write(`${usage}\n`);
    process.exit(0);
  }
  const [command, ...extra] = parsed.positionals;
  if ((command !== 'start' && command !== 'reload') || extra.length > 0)
    fail(
      `pm2: expected start or reload${command === undefined ? '' : ` (got "${parsed.positionals.join(' ')}")`}\n${usage}`,
      2,
    );
  return command;
}

export function ecosystemPath(): string {
  return join(root, 'deploy', 'pm2', 'ecosystem.config.cjs');
}

/** The API app, and the job worker app when the file defines one (PM2_JOBS_WORKER=true). */
function loadEcosystem(): { app: EcosystemApp; jobs: EcosystemApp | undefined } {
  const [app, jobs] = (requireCjs(ecosystemPath()) as { apps: EcosystemApp[] }).apps;
  if (app === undefined) throw new Refusal('deploy/pm2/ecosystem.config.cjs defines no app');
  return { app, jobs };
}

/** The environment PM2 will give a worker: this shell, then the file's env and env_production. */
export function workerEnv(app: EcosystemApp, instance: number): Record<string, string | undefined> {
  const fromFile = Object.fromEntries(
    Object.entries({ ...app.env, ...app.env_production }).map(([k, v]) => [k, String(v)]),
  );
  return { ...process.env, ...fromFile, NODE_APP_INSTANCE: String(instance) };
}

/** Secrets PM2 would store in plain text in dump.pm2 (`pm2 save`): refused, with what to do instead. */
export function plainSecrets(env: Record<string, string | undefined>): string[] {
  return plainSecretNames(env).map(
    (name) =>
      `${name} is set directly: PM2 would store it in plain text in its dump (pm2 save). Write it to a file only the service's user can read and set ${name}_FILE=/path/to/it instead`,
  );
}

async function checkDatabase(config: Config): Promise<void> {
  const handle = createDatabase(
    config.database,
    createLogger({ env: config.env, log: { ...config.log, level: 'silent', pm2: undefined } }),
  );
  try {
    await handle.ping(config.database.connectTimeoutMs).catch((err: unknown) => {
      throw new Refusal(
        `the database does not answer (${describeDatabase(config.database)}): ${(err as Error).message}`,
      );
    });
    const pending = await blockingPendingMigrations(handle.db, handle.engine);
    // With DATABASE_MIGRATE_ON_START the first worker applies them (under an advisory lock).
    if (pending.length > 0 && !config.database.migrateOnStart)
      throw new Refusal(`pending migrations (${pending.join(', ')}): run \`npm run db:migrate\` first`);
  } finally {
    await handle.close();
  }
}

function runPm2(args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [pm2Bin, ...args], {
      cwd: root,
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    child.once('error', reject);
    child.once('close', (code) => resolve(code ?? 1));
  });
}

interface Worker {
  instance: number;
  status: string;
  pid: number;
  /** PM2's restart count of this process slot. */
  restarts: number;
}

interface Pm2Bus {
  on(event: 'process:msg', cb: (packet: { raw?: unknown; process?: { name?: string } }) => void): void;
  close(): void;
}

interface Pm2Api {
  connect(cb: (err: Error | null) => void): void;
  list(cb: (err: Error | null, list: Pm2Process[]) => void): void;
  launchBus(cb: (err: Error | null, bus: Pm2Bus) => void): void;
  disconnect(): void;
}
interface Pm2Process {
  name: string;
  pid: number;
  pm2_env: { status: string; NODE_APP_INSTANCE?: number; restart_time?: number };
}

/** PM2's programmatic API for the polling: a socket round trip, not a `pm2 jlist` process each time. */
const pm2Api = requireCjs('pm2') as Pm2Api;
let connected: Promise<void> | undefined;

async function workers(name: string): Promise<Worker[]> {
  connected ??= new Promise((resolve, reject) => pm2Api.connect((err) => (err ? reject(err) : resolve())));
  await connected;
  const list = await new Promise<Pm2Process[]>((resolve, reject) =>
    pm2Api.list((err, processes) => (err ? reject(err) : resolve(processes))),
  );
  return list
    .filter((p) => p.name === name)
    .map((p) => ({
      instance: Number(p.pm2_env.NODE_APP_INSTANCE ?? 0),
      status: p.pm2_env.status,
      pid: p.pid,
      restarts: Number(p.pm2_env.restart_time ?? 0),
    }));
}

/**
 * Starts listening for an app's 'ready' messages on PM2's bus (before PM2 is told to start it, so
 * none is missed); `seen()` says whether one came since.
 */
async function watchReady(name: string): Promise<{ seen: () => boolean; close: () => void }> {
  connected ??= new Promise((resolve, reject) => pm2Api.connect((err) => (err ? reject(err) : resolve())));
  await connected;
  const bus = await new Promise<Pm2Bus>((resolve, reject) =>
    pm2Api.launchBus((err, b) => (err ? reject(err) : resolve(b))),
  );
  let ready = false;
  bus.on('process:msg', (packet) => {
    if (packet.raw === 'ready' && packet.process?.name === name) ready = true;
  });
  return { seen: () => ready, close: () => bus.close() };
}

function getReady(host: string, port: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve) => {
    const req = request({ host, port, path: '/ready', method: 'GET', timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => {
        body += chunk;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.once('timeout', () => req.destroy(new Error('timed out')));
    req.once('error', (err) => resolve({ status: 0, body: err.message }));
    req.end();
  });
}

/**
 * Every worker (these instance numbers) online and answering 200 on its own /ready, and the job
 * worker app, if any, online after its 'ready'; progress every 5 s; false at the deadline.
 */
async function waitUntilEveryWorkerReady(
  app: EcosystemApp,
  config: Config,
  instances: readonly number[],
  jobs: { app: EcosystemApp; ready: () => boolean } | undefined,
): Promise<boolean> {
  const base = Number(app.env_production.METRICS_PORT ?? 0);
  const host = ['0.0.0.0', '::', ''].includes(config.server.host) ? '127.0.0.1' : config.server.host;
  const deadline = Date.now() + Math.max(app.listen_timeout, jobs?.app.listen_timeout ?? 0) + 30_000;
  let lastReport = Date.now();
  // A worker PM2 keeps restarting will not become ready by the deadline: say so now.
  const names = [app.name, ...(jobs === undefined ? [] : [jobs.app.name])];
  const restartsAtStart = new Map<string, number>();
  for (const name of names)
    for (const w of await workers(name)) restartsAtStart.set(`${name}:${w.instance}`, w.restarts);
  for (;;) {
    const list = await workers(app.name);
    const jobWorkers = jobs === undefined ? [] : await workers(jobs.app.name);
    const looping = [
      ...list.map((w) => ({ name: app.name, w })),
      ...jobWorkers.map((w) => ({ name: jobs?.app.name ?? '', w })),
    ].filter(({ name, w }) => w.restarts - (restartsAtStart.get(`${name}:${w.instance}`) ?? 0) >= 3);
    if (looping.length > 0) {
      process.stderr.write(
        `pm2: not ready: ${looping.map(({ name, w }) => `${name} worker ${w.instance} restarted ${w.restarts - (restartsAtStart.get(`${name}:${w.instance}`) ?? 0)} times (crash loop)`).join('; ')}\n`,
      );
      return false;
    }
    const waiting: string[] = [];
    if (jobs !== undefined) {
      const online = jobWorkers.some((w) => w.status === 'online');
      if (!jobs.ready() || !online) waiting.push(`the job worker (${jobs.app.name}): not ready`);
    }
    for (const instance of instances) {
      const worker = list.find((w) => w.instance === instance);
      if (worker === undefined || worker.status !== 'online') {
        waiting.push(`worker ${instance}: ${worker?.status ?? 'missing'}`);
        continue;
      }
      if (base > 0) {
        const ready = await getReady(host, base + instance);
        if (ready.status !== 200) waiting.push(`worker ${instance}: /ready ${ready.status || ready.body}`);
      }
    }
    if (waiting.length === 0) return true;
    if (Date.now() > deadline) {
      process.stderr.write(`pm2: not ready: ${waiting.join('; ')}\n`);
      return false;
    }
    if (Date.now() - lastReport > 5000) {
      lastReport = Date.now();
      process.stderr.write(`pm2: waiting for ${waiting.join('; ')}\n`);
    }
    await sleep(250);
  }
}

function tail(file: string, lines: number): string {
  if (!existsSync(file)) return '';
  return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
}

async function main(): Promise<void> {
  const command = parseCommand();
  const { app, jobs } = loadEcosystem();
  const count = app.instances === 'max' ? availableParallelism() : app.instances;
  const env = workerEnv(app, count - 1);
  const refused = `pm2 ${command} refused; PM2 and its running workers were not touched`;
  // Before any PM2 call: the first one launches the daemon when none runs.
  applyClusterPolicy(
    command,
    (requireCjs('pm2/paths.js') as () => { PM2_PID_FILE_PATH: string })().PM2_PID_FILE_PATH,
  );

  const secrets = plainSecrets(env);
  let config: Config;
  try {
    config = loadConfig(env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    fail(`${refused}:\n${[err.message, ...secrets.map((s) => `  - ${s}`)].join('\n')}`);
  }
  if (secrets.length > 0) fail(`${refused}:\n${secrets.map((s) => `  - ${s}`).join('\n')}`);
  process.stdout.write(
    `pm2 ${command}: ${app.name}, ${count} worker${count === 1 ? '' : 's'} on port ${config.server.port}; ${describeDatabase(config.database)}; ${describeRedis(config.redis)}\n`,
  );
  try {
    await checkDatabase(config);
  } catch (err) {
    if (err instanceof Refusal) fail(`${refused}: ${err.message}`);
    throw err;
  }

  const before = await workers(app.name);
  const running = before.length > 0;
  if (command === 'start' && running)
    fail(`pm2 start: ${app.name} is already running; apply a new configuration with npm run pm2:reload`);
  if (command === 'reload' && !running)
    fail(`pm2 reload: ${app.name} is not running; start it with npm run pm2:start`);

  const pm2Args =
    command === 'start'
      ? ['start', ecosystemPath(), '--env', 'production']
      : ['reload', ecosystemPath(), '--env', 'production', '--update-env'];
  // A reload keeps the workers PM2 runs (an autoscaler may have added some): all of them must be ready.
  const instances = [
    ...new Set([...Array.from({ length: count }, (_, i) => i), ...before.map((w) => w.instance)]),
  ].sort((a, b) => a - b);
  const jobsReady = jobs === undefined ? undefined : await watchReady(jobs.name);
  const code = await runPm2(pm2Args);
  if (code !== 0) fail(`pm2 ${command}: pm2 exited ${code}`);
  const ready = await waitUntilEveryWorkerReady(
    app,
    config,
    instances,
    jobs === undefined || jobsReady === undefined ? undefined : { app: jobs, ready: jobsReady.seen },
  );
  jobsReady?.close();
  if (!ready) {
    const logs = [app.error_file, ...(jobs === undefined ? [] : [jobs.error_file])]
      .map((file) => [file, tail(file, 10)] as const)
      .filter(([, lines]) => lines !== '')
      .map(([file, lines]) => `; last lines of ${file}:\n${lines}`);
    fail(`pm2 ${command} failed: not every worker became ready${logs.join('')}`);
  }
  process.stdout.write(
    `pm2 ${command}: every worker is ready (${instances.length})${jobs === undefined ? '' : `, and the job worker ${jobs.name}`}; logs in ${dirname(app.error_file)}\n`,
  );
  pm2Api.disconnect();
  // PM2's client can keep handles open after disconnect; this command is done.
  process.exit(0);
}

main().catch((err: unknown) =>
  fail(`pm2: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`),
);
