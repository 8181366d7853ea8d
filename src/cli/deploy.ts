import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { type Artifact, buildArtifact, readArtifact } from '../ops/delivery/artifact.js';
import {
  DeployFailure,
  deploy,
  exitCodes,
  list,
  type Output,
  refuseUnpinned,
  rollback,
} from '../ops/delivery/deploy.js';
import {
  type Environment,
  EnvironmentError,
  environmentFile,
  loadEnvironment,
} from '../ops/delivery/environment.js';
import { healthCheck } from '../ops/delivery/health.js';
import { monitorTraffic } from '../ops/delivery/monitor.js';
import { RemoteError } from '../ops/delivery/ssh.js';

/**
 * Entry point of scripts/deploy.sh, rollback.sh, health-check.sh, monitor-traffic.sh --env (and
 * `build` for CI):
 *   node dist/cli/deploy.js <deploy|rollback|health|monitor|build> [options]
 * Exit codes: 0 ok, 1 failed (every switched server rolled back), 2 usage or refused, 3 deploy
 * lock held, 4 rollback failed, 5 rollback refused by the schema (an applied contract migration
 * the target release predates); health: the number of failed checks; monitor: 1 = SLO breached.
 */

const root = fileURLToPath(new URL('../..', import.meta.url));

const usage = `usage:
  scripts/deploy.sh (--env NAME | --production) [--artifact DIR] [--dry-run] [--max-parallel N] [--lock-wait SECONDS] [--config FILE]
  scripts/rollback.sh (--env NAME | --production) (--to=<release|tag|commit|previous> | --list) [--lock-wait SECONDS] [--config FILE]
  scripts/health-check.sh (--env NAME | --production) [--json] [--config FILE]
  scripts/monitor-traffic.sh (--env NAME | --production) [--seconds S] [--interval S] [--max-5xx-ratio R] [--max-p95-ms N] [--config FILE]
  node dist/cli/deploy.js build [--out DIR] [--version TAG] [--commit SHA]

  --env NAME         deploy/environments/NAME.json (local: the stack's .stack/deploy/local.json)
  --production       the guide's spelling of --env production
  --config FILE      another environment file
  --artifact DIR     ship this artifact (from CI: node dist/cli/deploy.js build); default: build one now
  --dry-run          print the plan and each server's state; change nothing
  --max-parallel N   servers switched at once after the canary (default 1)
  --lock-wait S      wait up to S seconds for another deploy's lock (default 0: refuse at once)
  --force            rollback: switch even to a release older than an applied contract migration,
                     or when the target (--to=previous) means different releases on different servers
  --seconds S        monitor: the window (default 60); --interval S: one sample per S (default 5)
  --max-5xx-ratio R, --max-p95-ms N   monitor: the SLO (default: the file's sloMaxErrorRatio, sloMaxP95Ms)
exit codes: 0 ok, 1 failed and rolled back (monitor: SLO breached), 2 usage/refused, 3 lock held,
4 rollback failed, 5 rollback refused: the target predates an applied contract migration`;

const io: Output = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
};

function usageError(message: string): never {
  process.stderr.write(`${message}\n${usage}\n`);
  process.exit(exitCodes.usage);
}

function seconds(value: string | undefined, flag: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (!/^[0-9]{1,6}$/.test(value)) usageError(`${flag} takes a whole number`);
  return Number(value);
}

function environment(values: Record<string, unknown>): Environment {
  const envName = values.production === true ? 'production' : (values.env as string | undefined);
  if (values.production === true && values.env !== undefined && values.env !== 'production')
    usageError('--production and --env disagree');
  if (envName === undefined) usageError('say where: --env NAME or --production');
  try {
    return loadEnvironment(environmentFile(envName, values.config as string | undefined, process.cwd()));
  } catch (err) {
    if (err instanceof EnvironmentError) usageError(err.message);
    throw err;
  }
}

async function main(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args: rest,
      strict: true,
      allowPositionals: false,
      options: {
        env: { type: 'string' },
        production: { type: 'boolean' },
        config: { type: 'string' },
        artifact: { type: 'string' },
        'dry-run': { type: 'boolean' },
        'max-parallel': { type: 'string' },
        'lock-wait': { type: 'string' },
        to: { type: 'string' },
        list: { type: 'boolean' },
        force: { type: 'boolean' },
        json: { type: 'boolean' },
        out: { type: 'string' },
        version: { type: 'string' },
        commit: { type: 'string' },
        seconds: { type: 'string' },
        interval: { type: 'string' },
        'max-5xx-ratio': { type: 'string' },
        'max-p95-ms': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    usageError((err as Error).message.split('\n')[0] ?? 'bad arguments');
  }
  const values = parsed.values as Record<string, string | boolean | undefined>;
  if (values.help === true) {
    io.out(usage);
    return exitCodes.ok;
  }
  switch (verb) {
    case 'build': {
      const artifact = buildArtifact({
        root,
        out: (values.out as string | undefined) ?? join(root, '.release-cache', 'artifacts'),
        ...(typeof values.version === 'string' ? { version: values.version } : {}),
        ...(typeof values.commit === 'string' ? { commit: values.commit } : {}),
      });
      io.out(artifact.dir);
      return exitCodes.ok;
    }
    case 'deploy': {
      const env = environment(values);
      const maxParallel = seconds(values['max-parallel'] as string | undefined, '--max-parallel', 1);
      if (maxParallel < 1) usageError('--max-parallel must be at least 1');
      let artifact: Artifact;
      try {
        artifact =
          typeof values.artifact === 'string'
            ? readArtifact(values.artifact)
            : buildArtifact({ root, out: join(root, '.release-cache', 'artifacts') });
      } catch (err) {
        usageError((err as Error).message);
      }
      return deploy(root, env, io, {
        artifact,
        dryRun: values['dry-run'] === true,
        maxParallel,
        lockWaitSeconds: seconds(values['lock-wait'] as string | undefined, '--lock-wait', 0),
      });
    }
    case 'rollback': {
      const env = environment(values);
      if (values.list === true) return list(root, env, io);
      if (typeof values.to !== 'string' || values.to === '')
        usageError('rollback needs --to=<release|tag|commit|previous> or --list');
      return rollback(root, env, io, {
        to: values.to,
        lockWaitSeconds: seconds(values['lock-wait'] as string | undefined, '--lock-wait', 0),
        force: values.force === true,
      });
    }
    case 'health': {
      const env = environment(values);
      const checks = await healthCheck(root, env);
      if (values.json === true) io.out(JSON.stringify({ environment: env.name, checks }, null, 2));
      else
        for (const c of checks)
          io.out(
            `${c.status === 'ok' ? 'ok  ' : c.status === 'skip' ? 'skip' : 'FAIL'}  ${c.target.padEnd(12)} ${c.check.padEnd(14)} ${c.detail}`,
          );
      const failed = checks.filter((c) => c.status === 'fail').length;
      if (values.json !== true)
        io.out(
          `${failed} failed, ${checks.filter((c) => c.status === 'ok').length} ok, ${checks.filter((c) => c.status === 'skip').length} skipped`,
        );
      return Math.min(failed, 125);
    }
    case 'monitor': {
      const env = environment(values);
      const window = seconds(values.seconds as string | undefined, '--seconds', 60);
      const interval = seconds(values.interval as string | undefined, '--interval', 5);
      if (window < 1 || interval < 1) usageError('--seconds and --interval must be at least 1');
      const ratio = values['max-5xx-ratio'] as string | undefined;
      if (ratio !== undefined && !/^(0(\.[0-9]+)?|1(\.0+)?)$/.test(ratio))
        usageError('--max-5xx-ratio takes a ratio from 0 to 1 (0.01 = 1 %)');
      const maxP95Ms = seconds(values['max-p95-ms'] as string | undefined, '--max-p95-ms', env.sloMaxP95Ms);
      refuseUnpinned(env);
      const { breaches } = await monitorTraffic(root, env, io, {
        seconds: window,
        intervalSeconds: interval,
        maxErrorRatio: ratio === undefined ? env.sloMaxErrorRatio : Number(ratio),
        maxP95Ms,
      });
      if (breaches.length === 0) {
        io.out('SLO met on every server');
        return exitCodes.ok;
      }
      for (const b of breaches) io.err(`SLO breached: ${b}`);
      return exitCodes.failed;
    }
    default:
      usageError(
        verb === undefined ? 'say what: deploy, rollback, health, monitor or build' : `unknown verb ${verb}`,
      );
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof DeployFailure || err instanceof RemoteError) {
      io.err(err.message);
      process.exit(err instanceof DeployFailure ? err.code : exitCodes.failed);
    }
    io.err(`deploy: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.exit(exitCodes.failed);
  },
);
