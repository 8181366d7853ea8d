import { parseArgs } from 'node:util';
import { defaultStateDir, down, StackError, serverAction, status, up } from './stack.js';
import { stageNames, stages } from './stages.js';
import type { StageName } from './types.js';

/**
 * `npm run stack -- <command>`: the guide's architecture on one machine, from the shipped files.
 * Exit codes: 0 done, 1 failed, 2 usage error, 3 already running (up) / nothing running (status).
 */
const usage = `usage: npm run stack -- <command> [options]

commands:
  up --stage <${stageNames.join('|')}>   start a stage (refuses if one already runs in the state dir)
  status [--json]                        what runs, where (the JSON is documented in README "npm run stack")
  down                                   stop everything the stack started and remove its state dir
  server <name> <kill|start|reload>      kill -9 / restart / PM2-reload one app server (failover drills)

options:
  --state-dir DIR      where the stack keeps everything (default ${defaultStateDir}, or $STACK_DIR)
  --instances N        PM2 workers per app server (mvp default 2, growth and scale 1)
  --port N             the app's port below growth (default: a free one)
  --http-port N        nginx's HTTP port in growth (default: a free one)
  --https-port N       nginx's HTTPS port in growth (default: a free one)
  --server-name NAME   nginx server_name and certificate name (default localhost)
  --public-dir DIR     static files for nginx and the app (default: the project's public/)
  --monitoring         growth, scale: also Prometheus, Alertmanager, the alert webhook and the exporters (URLs in status --json)
  --env NAME=VALUE     extra environment for every app server (repeatable), e.g. --env RATE_LIMIT_MAX=100000
  --deploy-targets     growth: app servers as SSH deploy targets (own user, dir, sshd; pinned keys),
                       empty until scripts/deploy.sh --env local (needs root and openssh-server)
  --autoscale          run an autoscaler (npm run autoscale -- --actuator pm2) on every PM2 server
  --autoscale-min N    its fewest workers per server (default 1)
  --autoscale-max N    its most workers per server (default 4)
  --autoscale-options "WORDS"   more npm run autoscale flags as name=value words, e.g. "period=2 stabilisation=20 dry-run"
  --postgres-url URL   an admin connection to create the throwaway database on (default $STACK_POSTGRES_URL or postgres://postgres@127.0.0.1:5432/postgres)

stages:
${stageNames.map((s) => `  ${s.padEnd(10)} ${stages[s].description}`).join('\n')}`;

class UsageError extends Error {}

function int(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined;
  if (!/^[0-9]+$/.test(value) || Number(value) < 1 || Number(value) > 65535)
    throw new UsageError(`--${name} must be a number from 1 to 65535`);
  return Number(value);
}

function parseEnv(pairs: string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const pair of pairs) {
    const match = /^([A-Z][A-Z0-9_]*)=(.*)$/s.exec(pair);
    if (match === null) throw new UsageError(`--env takes NAME=VALUE (got "${pair}")`);
    env[match[1] as string] = match[2] as string;
  }
  return env;
}

/** --autoscale and its settings (only for stages whose servers are PM2 clusters). */
function autoscaleOptions(
  values: {
    autoscale?: boolean;
    'autoscale-min'?: string;
    'autoscale-max'?: string;
    'autoscale-options'?: string;
  },
  stage: StageName,
): { min: number; max: number; extraArgs: string[] } | undefined {
  const given = ['autoscale-min', 'autoscale-max', 'autoscale-options'] as const;
  if (values.autoscale !== true) {
    const stray = given.find((name) => values[name] !== undefined);
    if (stray !== undefined) throw new UsageError(`--${stray} needs --autoscale`);
    return undefined;
  }
  if (stage === 'prototype') throw new UsageError('--autoscale needs PM2 servers (mvp or a later stage)');
  const min = int(values['autoscale-min'], 'autoscale-min') ?? 1;
  const max = int(values['autoscale-max'], 'autoscale-max') ?? 4;
  if (max < min || max > 64) throw new UsageError('--autoscale-max must be from --autoscale-min to 64');
  // "period=2 stabilisation=20 dry-run" → --period 2 --stabilisation 20 --dry-run (no leading
  // dashes in the value: parseArgs would take it for an option).
  const reserved =
    /^(actuator|pm2-home|app|worker-host|worker-metrics-port|min|max|status-file|metrics-host|metrics-port|once|cpu)$/;
  const extraArgs: string[] = [];
  for (const word of (values['autoscale-options'] ?? '').split(/\s+/).filter((a) => a !== '')) {
    const match = /^([a-z][a-z0-9-]*)(?:=(\S+))?$/.exec(word);
    if (match === null) throw new UsageError(`--autoscale-options takes name=value words (got "${word}")`);
    const name = match[1] as string;
    if (reserved.test(name)) throw new UsageError(`--autoscale-options: ${name} is set by the stack`);
    extraArgs.push(`--${name}`, ...(match[2] === undefined ? [] : [match[2]]));
  }
  return { min, max, extraArgs };
}

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      stage: { type: 'string' },
      'state-dir': { type: 'string' },
      json: { type: 'boolean' },
      instances: { type: 'string' },
      port: { type: 'string' },
      'http-port': { type: 'string' },
      'https-port': { type: 'string' },
      'server-name': { type: 'string' },
      'postgres-url': { type: 'string' },
      'public-dir': { type: 'string' },
      env: { type: 'string', multiple: true },
      monitoring: { type: 'boolean' },
      'deploy-targets': { type: 'boolean' },
      autoscale: { type: 'boolean' },
      'autoscale-min': { type: 'string' },
      'autoscale-max': { type: 'string' },
      'autoscale-options': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const [command, ...rest] = positionals;
  if (values.help || command === undefined) {
    console.log(usage);
    return command === undefined && !values.help ? 2 : 0;
  }
  const stateDir = values['state-dir'] ?? process.env.STACK_DIR ?? defaultStateDir;
  const log = (line: string) => console.error(line);
  switch (command) {
    case 'up': {
      const stage = values.stage as StageName | undefined;
      if (stage === undefined || !stageNames.includes(stage))
        throw new UsageError(`up needs --stage ${stageNames.join('|')}`);
      if (values.monitoring === true && stage !== 'growth' && stage !== 'scale')
        throw new UsageError(
          '--monitoring needs --stage growth or scale (it watches nginx, PostgreSQL and Redis)',
        );
      const instances = int(values.instances, 'instances');
      const autoscale = autoscaleOptions(values, stage);
      const result = await up(stage, {
        ...(autoscale === undefined ? {} : { autoscale }),
        stateDir,
        log,
        ...(instances === undefined ? {} : { instances }),
        ...(values.port === undefined ? {} : { port: int(values.port, 'port') as number }),
        ...(values['http-port'] === undefined
          ? {}
          : { httpPort: int(values['http-port'], 'http-port') as number }),
        ...(values['https-port'] === undefined
          ? {}
          : { httpsPort: int(values['https-port'], 'https-port') as number }),
        ...(values['server-name'] === undefined ? {} : { serverName: values['server-name'] }),
        ...(values['postgres-url'] === undefined ? {} : { postgresAdminUrl: values['postgres-url'] }),
        ...(values['public-dir'] === undefined ? {} : { publicDir: values['public-dir'] }),
        ...(values.env === undefined ? {} : { appEnv: parseEnv(values.env) }),
        ...(values.monitoring === true ? { monitoring: true } : {}),
        ...(values['deploy-targets'] === true ? { deployTargets: true } : {}),
      });
      const entry = typeof result.entry === 'string' ? result.entry : result.entry.https;
      console.log(`${stage} stack is up: ${entry}${result.caFile ? ` (trust ${result.caFile})` : ''}`);
      console.log(
        `status: npm run stack -- status --json${stateDir === defaultStateDir ? '' : ` --state-dir ${stateDir}`}`,
      );
      return 0;
    }
    case 'status': {
      const current = status(stateDir);
      if (values.json) {
        console.log(JSON.stringify(current ?? { running: false, stateDir }, null, 2));
      } else if (current === null) {
        console.log(`no stack in ${stateDir}`);
      } else {
        const entry = typeof current.entry === 'string' ? current.entry : current.entry.https;
        console.log(`${current.stage} stack, ${current.running ? 'running' : 'NOT all running'}: ${entry}`);
        for (const s of current.servers) {
          console.log(
            `  ${s.name} (${s.role}, weight ${s.weight}) ${s.url} pids ${s.pids.join(',') || 'none'}`,
          );
          const last = s.autoscale as {
            at: number;
            action: string;
            current: number;
            desired: number;
            reason: string;
          } | null;
          if (last !== null)
            console.log(
              `    autoscale: ${s.workers} workers; last decision ${new Date(last.at).toISOString()} ${last.action} ${last.current} → ${last.desired} (${last.reason})`,
            );
        }
        for (const d of current.databases) {
          const r = d.replication as { streaming: string | null; lagBytes: number | null } | undefined;
          const lag =
            r === undefined ? '' : ` ${r.streaming ?? 'NOT streaming'}, ${r.lagBytes ?? '?'} bytes behind`;
          console.log(`  database (${d.role}) ${d.url}${lag}`);
        }
        if (current.redis) console.log(`  redis ${current.redis.url}`);
        if (current.nginx) console.log(`  nginx pid ${current.nginx.pid ?? 'none'} ${current.nginx.config}`);
        const monitored = current.components.monitoring as
          | { prometheus: string; alertmanager: string }
          | undefined;
        if (monitored)
          console.log(`  prometheus ${monitored.prometheus}, alertmanager ${monitored.alertmanager}`);
      }
      return current === null ? 3 : 0;
    }
    case 'down': {
      const stopped = await down(stateDir, log);
      console.log(stopped ? `stopped; removed ${stateDir}` : `no stack in ${stateDir}; nothing to stop`);
      return 0;
    }
    case 'server': {
      const [name, action] = rest;
      if (name === undefined || (action !== 'kill' && action !== 'start' && action !== 'reload'))
        throw new UsageError('server needs a name and kill|start|reload');
      await serverAction(stateDir, name, action);
      console.log(`${name}: ${action} done`);
      return 0;
    }
    default:
      throw new UsageError(`unknown command "${command}"`);
  }
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (err) {
  if (err instanceof UsageError || String((err as { code?: unknown }).code).startsWith('ERR_PARSE_ARGS')) {
    console.error(`${(err as Error).message}\n\n${usage}`);
    process.exitCode = 2;
  } else if (err instanceof StackError) {
    console.error((err as Error).message);
    process.exitCode = (err as Error).message.includes('already exists') ? 3 : 1;
  } else {
    console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
    process.exitCode = 1;
  }
}
