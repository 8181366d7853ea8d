import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { Registry } from 'prom-client';
import { type Actuator, createAutoscaler, type DecisionRecord } from '../scaling/autoscaler.js';
import { commandActuator } from '../scaling/command-actuator.js';
import { digitalOceanActuator } from '../scaling/digitalocean-actuator.js';
import { pm2Actuator } from '../scaling/pm2-actuator.js';
import { defaultPolicy, type MetricName, type PolicyConfig, policyProblems } from '../scaling/policy.js';
import { metricsSampler } from '../scaling/samplers.js';

/**
 * `npm run autoscale -- --actuator pm2|command|digitalocean [options]`: the monitor as its own
 * process (one per server for PM2, one per cluster for droplets). It decides every period with the
 * policy of src/scaling/policy.ts, logs every decision as a JSON line with its inputs, serves its
 * own /metrics when --metrics-port is given, and keeps the last decision in --status-file.
 * Exit codes: 0 stopped by a signal (or --once done), 1 failed, 2 usage error.
 */

const d = defaultPolicy;
const usage = `usage: npm run autoscale -- --actuator pm2|command|digitalocean [options]

policy (defaults in parentheses; durations in seconds):
  --min N  (${d.min})   --max N  (${d.max}; pm2: the app's core count is a sensible ceiling)
  --period S (${d.periodMs / 1000})   --tolerance X (${d.tolerance})   --warmup S (${d.warmupMs / 1000})
  --target-cpu X (${d.targets.cpu}; CPU per instance, 1 = one core)   --cpu workers|host (workers;
      host, pm2 only: this machine's busy cores from /proc/stat, shared out among the workers)
  --target-event-loop-p99 S (${d.targets.eventLoopP99})   --target-in-flight N (${d.targets.inFlight})   --target-pool-waiting N (${d.targets.poolWaiting})
      (a target of 0 leaves that metric out)
  --memory-guard X (${d.memoryGuard}; share of memory used at which nothing is added)
  --scale-up-max-pods N (${d.scaleUp.maxPods})   --scale-up-max-percent P (${d.scaleUp.maxPercent})   --scale-up-cooldown S (${d.scaleUp.cooldownMs / 1000})
  --scale-down-max-pods N (${d.scaleDown.maxPods})   --stabilisation S (${d.scaleDown.stabilisationMs / 1000})   --scale-down-cooldown S (${d.scaleDown.cooldownMs / 1000})
  --dry-run            decide and log, change nothing
  --once               one decision, print it as JSON, exit

process:
  --name NAME          the label of this target in logs and metrics (default: the app or the tag)
  --status-file PATH   the last decision as JSON, rewritten after each one
  --metrics-port N     serve the monitor's own /metrics on this port   --metrics-host H (127.0.0.1)
  --metrics-token-file PATH   bearer token for the workers' /metrics (METRICS_TOKEN)

pm2:            --pm2-home DIR ($PM2_HOME or ~/.pm2)   --app NAME (shipshape)
                --worker-metrics-port N (the app's METRICS_PORT, 9464)   --worker-host H (127.0.0.1)
command:        --hook PATH [--hook-arg A …]   (PATH instances | PATH scale <n>; see src/scaling/command-actuator.ts)
digitalocean:   --do-api URL (https://api.digitalocean.com)   --do-token-file PATH   --do-tag TAG
                --do-name-prefix P   --do-region R   --do-size S   --do-image I   [--do-vpc UUID]
                [--do-ssh-key ID …]   [--do-user-data-file PATH]   --do-drain S (30)
                [--worker-metrics-url-template 'http://{ip}:9464/metrics']`;

class UsageError extends Error {}

const options = {
  actuator: { type: 'string' },
  name: { type: 'string' },
  min: { type: 'string' },
  max: { type: 'string' },
  period: { type: 'string' },
  tolerance: { type: 'string' },
  warmup: { type: 'string' },
  cpu: { type: 'string' },
  'target-cpu': { type: 'string' },
  'target-event-loop-p99': { type: 'string' },
  'target-in-flight': { type: 'string' },
  'target-pool-waiting': { type: 'string' },
  'memory-guard': { type: 'string' },
  'scale-up-max-pods': { type: 'string' },
  'scale-up-max-percent': { type: 'string' },
  'scale-up-cooldown': { type: 'string' },
  'scale-down-max-pods': { type: 'string' },
  stabilisation: { type: 'string' },
  'scale-down-cooldown': { type: 'string' },
  'dry-run': { type: 'boolean' },
  once: { type: 'boolean' },
  'status-file': { type: 'string' },
  'metrics-port': { type: 'string' },
  'metrics-host': { type: 'string' },
  'metrics-token-file': { type: 'string' },
  'pm2-home': { type: 'string' },
  app: { type: 'string' },
  'worker-metrics-port': { type: 'string' },
  'worker-host': { type: 'string' },
  hook: { type: 'string' },
  'hook-arg': { type: 'string', multiple: true },
  'do-api': { type: 'string' },
  'do-token-file': { type: 'string' },
  'do-tag': { type: 'string' },
  'do-name-prefix': { type: 'string' },
  'do-region': { type: 'string' },
  'do-size': { type: 'string' },
  'do-image': { type: 'string' },
  'do-vpc': { type: 'string' },
  'do-ssh-key': { type: 'string', multiple: true },
  'do-user-data-file': { type: 'string' },
  'do-drain': { type: 'string' },
  'worker-metrics-url-template': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

type Values = ReturnType<typeof parseArgs<{ options: typeof options }>>['values'];

function number(values: Values, name: keyof Values, fallback: number, { whole = false } = {}): number {
  const raw = values[name];
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (
    typeof raw !== 'string' ||
    raw.trim() === '' ||
    !Number.isFinite(n) ||
    n < 0 ||
    (whole && !Number.isInteger(n))
  )
    throw new UsageError(`--${name} must be a ${whole ? 'whole ' : ''}number ≥ 0 (got "${String(raw)}")`);
  return n;
}

const ms = (values: Values, name: keyof Values, fallbackMs: number) =>
  number(values, name, fallbackMs / 1000) * 1000;

function policyFrom(values: Values, maxDefault: number): PolicyConfig {
  const targets: Partial<Record<MetricName, number>> = {};
  const target = (name: MetricName, flag: keyof Values) => {
    const t = number(values, flag, d.targets[name] ?? 0);
    if (t > 0) targets[name] = t;
  };
  target('cpu', 'target-cpu');
  target('eventLoopP99', 'target-event-loop-p99');
  target('inFlight', 'target-in-flight');
  target('poolWaiting', 'target-pool-waiting');
  const policy: PolicyConfig = {
    min: number(values, 'min', d.min, { whole: true }),
    max: number(values, 'max', maxDefault, { whole: true }),
    periodMs: ms(values, 'period', d.periodMs),
    tolerance: number(values, 'tolerance', d.tolerance),
    targets,
    memoryGuard: number(values, 'memory-guard', d.memoryGuard),
    scaleUp: {
      maxPods: number(values, 'scale-up-max-pods', d.scaleUp.maxPods, { whole: true }),
      maxPercent: number(values, 'scale-up-max-percent', d.scaleUp.maxPercent),
      cooldownMs: ms(values, 'scale-up-cooldown', d.scaleUp.cooldownMs),
    },
    scaleDown: {
      maxPods: number(values, 'scale-down-max-pods', d.scaleDown.maxPods, { whole: true }),
      stabilisationMs: ms(values, 'stabilisation', d.scaleDown.stabilisationMs),
      cooldownMs: ms(values, 'scale-down-cooldown', d.scaleDown.cooldownMs),
    },
    warmupMs: ms(values, 'warmup', d.warmupMs),
    dryRun: values['dry-run'] === true,
  };
  const problems = policyProblems(policy);
  if (problems.length > 0) throw new UsageError(`policy: ${problems.join('; ')}`);
  return policy;
}

function required(values: Values, name: keyof Values): string {
  const v = values[name];
  if (typeof v !== 'string' || v === '') throw new UsageError(`--${name} is required with this actuator`);
  return v;
}

const readSecret = (path: string | undefined) =>
  path === undefined ? undefined : readFileSync(path, 'utf8').trim();

function actuatorFrom(values: Values): { actuator: Actuator; name: string; cpu: 'workers' | 'host' } {
  const cpu = values.cpu ?? 'workers';
  if (cpu !== 'workers' && cpu !== 'host') throw new UsageError('--cpu is workers or host');
  // The host's /proc/stat measures this machine: it says nothing about droplets or whatever a
  // hook runs, so their count would follow this machine's load.
  if (cpu === 'host' && (values.actuator === 'command' || values.actuator === 'digitalocean'))
    throw new UsageError(
      `--cpu host reads this machine's /proc/stat: only for --actuator pm2, whose workers run here (${values.actuator}'s instances do not); use --cpu workers`,
    );
  switch (values.actuator) {
    case 'pm2': {
      // PM2's client prints progress on stdout, where the decisions go as JSON lines.
      process.env.PM2_SILENT = 'true';
      const app = values.app ?? 'shipshape';
      return {
        actuator: pm2Actuator({
          pm2Home: values['pm2-home'] ?? process.env.PM2_HOME ?? join(homedir(), '.pm2'),
          app,
          metricsHost: values['worker-host'] ?? '127.0.0.1',
          metricsPort: number(values, 'worker-metrics-port', 9464, { whole: true }),
        }),
        name: values.name ?? app,
        cpu,
      };
    }
    case 'command':
      return {
        actuator: commandActuator({ command: required(values, 'hook'), args: values['hook-arg'] ?? [] }),
        name: values.name ?? 'command',
        cpu,
      };
    case 'digitalocean': {
      const tag = required(values, 'do-tag');
      const token = readSecret(required(values, 'do-token-file'));
      if (token === undefined || token === '') throw new UsageError('--do-token-file is empty');
      return {
        actuator: digitalOceanActuator({
          apiUrl: values['do-api'] ?? 'https://api.digitalocean.com',
          token,
          tag,
          namePrefix: values['do-name-prefix'] ?? tag,
          droplet: {
            region: required(values, 'do-region'),
            size: required(values, 'do-size'),
            image: required(values, 'do-image'),
            ...(values['do-vpc'] === undefined ? {} : { vpc_uuid: values['do-vpc'] }),
            ...(values['do-ssh-key'] === undefined ? {} : { ssh_keys: values['do-ssh-key'] }),
            ...(values['do-user-data-file'] === undefined
              ? {}
              : { user_data: readFileSync(values['do-user-data-file'], 'utf8') }),
          },
          drainMs: ms(values, 'do-drain', 30_000),
          ...(values['worker-metrics-url-template'] === undefined
            ? {}
            : { metricsUrlTemplate: values['worker-metrics-url-template'] }),
        }),
        name: values.name ?? tag,
        cpu,
      };
    }
    default:
      throw new UsageError('--actuator is pm2, command or digitalocean');
  }
}

/**
 * The status file: the last decision plus the instances as they are after it (ids and /metrics
 * URLs: a scale-down removes PM2's oldest workers, so the URLs are not 0…n−1). Written by rename,
 * in order, so a reader never sees half a file or an older decision after a newer one.
 */
function statusWriter(path: string, actuator: Actuator, log: pino.Logger) {
  let queue = Promise.resolve();
  const write = (record: DecisionRecord) => {
    queue = queue
      .then(async () => {
        const instances = await actuator.instances().catch(() => null);
        const tmp = `${path}.tmp`;
        writeFileSync(tmp, `${JSON.stringify({ ...record, instances })}\n`, { mode: 0o644 });
        renameSync(tmp, path);
      })
      // A full disk or a removed directory must not stop the scaling: logged, the next decision tries again.
      .catch((err: unknown) =>
        log.error(
          { err, statusFile: path },
          `autoscale: cannot write the status file (${(err as Error).message})`,
        ),
      );
  };
  return { write, flush: () => queue };
}

async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options, strict: true, allowPositionals: false });
  if (values.help) {
    console.log(usage);
    return 0;
  }
  const { actuator, name, cpu } = actuatorFrom(values);
  const policy = policyFrom(values, d.max);
  // Synchronous: a decision line is written before the next thing happens (and before --once prints).
  const log = pino(
    { base: { service: 'autoscaler', target: name }, timestamp: pino.stdTimeFunctions.isoTime },
    pino.destination({ dest: 1, sync: true }),
  );
  const registry = new Registry();
  const token = readSecret(values['metrics-token-file']);
  const statusFile = values['status-file'];
  const status = statusFile === undefined ? null : statusWriter(statusFile, actuator, log);
  const sampler = metricsSampler({ cpu, log, ...(token === undefined ? {} : { token }) });
  const scaler = createAutoscaler({
    target: name,
    policy,
    actuator,
    sampler,
    log,
    registry,
    ...(status === null ? {} : { onDecision: status.write }),
  });

  if (values.once) {
    // CPU is a rate and a worker's first event-loop reading covers its boot: both need an earlier
    // scrape. One priming scrape, a second, then the decision (else --once could only ever hold).
    await sampler.sample(await actuator.instances(), Date.now());
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const record = await scaler.tick();
    console.log(JSON.stringify(record));
    await status?.flush();
    await actuator.close?.();
    return record.error === undefined ? 0 : 1;
  }

  const metricsPort =
    values['metrics-port'] === undefined ? undefined : number(values, 'metrics-port', 0, { whole: true });
  const server =
    metricsPort === undefined
      ? null
      : createServer((req, res) => {
          if (req.method !== 'GET' || req.url?.split('?')[0] !== '/metrics') {
            res.writeHead(404, { 'content-type': 'text/plain' }).end('Not found\n');
            return;
          }
          registry.metrics().then(
            (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
            () => res.writeHead(500).end(),
          );
        });
  if (server !== null)
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(metricsPort, values['metrics-host'] ?? '127.0.0.1', () => resolve());
    });
  log.info(
    { policy, actuator: actuator.name, cpu, metricsPort: metricsPort ?? null },
    `autoscale ${name}: every ${policy.periodMs / 1000} s, ${policy.min}–${policy.max} instances${policy.dryRun ? ' (dry run)' : ''}`,
  );
  const controller = new AbortController();
  for (const signal of ['SIGTERM', 'SIGINT'] as const)
    process.once(signal, () => {
      log.info({}, `autoscale ${name}: ${signal}, stopping after the current decision`);
      controller.abort();
    });
  await scaler.run(controller.signal);
  await status?.flush();
  server?.close();
  await actuator.close?.();
  return 0;
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (err) {
  if (err instanceof UsageError || String((err as { code?: unknown }).code).startsWith('ERR_PARSE_ARGS')) {
    console.error(`autoscale: ${(err as Error).message}\n\n${usage}`);
    process.exitCode = 2;
  } else {
    console.error(`autoscale: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.exitCode = 1;
  }
}
// PM2's client keeps handles open after disconnect.
process.exit();
