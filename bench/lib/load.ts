import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import autocannon from 'autocannon';
import { pinned } from './processes.js';

const run = promisify(execFile);

export interface LoadOptions {
  readonly port: number;
  /** http (default) or https (wrk and autocannon do not verify the certificate). */
  readonly scheme?: 'http' | 'https';
  readonly method?: 'GET' | 'POST';
  readonly paths: readonly string[];
  readonly headers?: Readonly<Record<string, string>>;
  readonly body?: unknown;
  /** Several bodies, used in turn (overrides `body`). */
  readonly bodies?: readonly unknown[];
  /** A distinct Idempotency-Key on every request. */
  readonly idempotency?: boolean;
  readonly connections: number;
  readonly durationSeconds: number;
  readonly core?: number;
}

export interface LoadResult {
  readonly tool: 'wrk' | 'autocannon';
  readonly requests: number;
  readonly rps: number;
  readonly p50Ms: number;
  readonly p95Ms: number;
  readonly p99Ms: number;
  /** Socket errors and timeouts. */
  readonly errors: number;
  /** Responses with status ≥ 400 (wrk) or outside 2xx (autocannon). */
  readonly non2xx: number;
}

export const hasWrk = (() => {
  try {
    execFileSync('wrk', ['--version'], { stdio: 'ignore' });
    return true;
  } catch (err) {
    // wrk --version exits 1 after printing its version.
    return (err as { status?: number }).status === 1;
  }
})();

const script = new URL('../wrk/scenario.lua', import.meta.url).pathname;

async function viaWrk(options: LoadOptions): Promise<LoadResult> {
  const headerLines = Object.entries(options.headers ?? {}).map(([k, v]) => `${k}: ${v}`);
  const [command, args] = pinned(options.core, 'wrk', [
    '-t1',
    `-c${options.connections}`,
    `-d${options.durationSeconds}s`,
    '--timeout',
    '10s',
    '-s',
    script,
    `${options.scheme ?? 'http'}://127.0.0.1:${options.port}`,
  ]);
  const { stdout } = await run(command, args, {
    env: {
      ...process.env,
      WRK_METHOD: options.method ?? 'GET',
      WRK_PATHS: options.paths.join(','),
      WRK_HEADERS: headerLines.join('|'),
      WRK_IDEMPOTENCY: options.idempotency ? '1' : '0',
      WRK_RUN_ID: `${process.pid}-${Date.now()}`,
      ...(options.body === undefined ? {} : { WRK_BODY: JSON.stringify(options.body) }),
      ...(options.bodies === undefined
        ? {}
        : { WRK_BODIES: options.bodies.map((b) => JSON.stringify(b)).join('\n') }),
    },
    maxBuffer: 10 * 1024 * 1024,
  });
  const line = stdout.split('\n').find((l) => l.startsWith('{"requests"'));
  if (line === undefined) throw new Error(`wrk printed no result:\n${stdout}`);
  const r = JSON.parse(line) as {
    requests: number;
    durationUs: number;
    errors: { connect: number; read: number; write: number; status: number; timeout: number };
    latencyUs: { p50: number; p95: number; p99: number };
  };
  return {
    tool: 'wrk',
    requests: r.requests,
    rps: r.requests / (r.durationUs / 1e6),
    p50Ms: r.latencyUs.p50 / 1000,
    p95Ms: r.latencyUs.p95 / 1000,
    p99Ms: r.latencyUs.p99 / 1000,
    errors: r.errors.connect + r.errors.read + r.errors.write + r.errors.timeout,
    non2xx: r.errors.status,
  };
}

async function viaAutocannon(options: LoadOptions): Promise<LoadResult> {
  let counter = 0;
  const result = await autocannon({
    url: `${options.scheme ?? 'http'}://127.0.0.1:${options.port}`,
    connections: options.connections,
    duration: options.durationSeconds,
    requests: [
      {
        method: options.method ?? 'GET',
        setupRequest: (req: autocannon.Request) => {
          counter++;
          return {
            ...req,
            path: options.paths[counter % options.paths.length] ?? '/',
            headers: {
              ...options.headers,
              ...(options.body === undefined && options.bodies === undefined
                ? {}
                : { 'content-type': 'application/json' }),
              ...(options.idempotency ? { 'idempotency-key': `bench-${process.pid}-${counter}` } : {}),
            },
            ...(options.bodies !== undefined
              ? { body: JSON.stringify(options.bodies[counter % options.bodies.length]) }
              : options.body === undefined
                ? {}
                : { body: JSON.stringify(options.body) }),
          };
        },
      },
    ],
  });
  // autocannon reports p90 and p97.5 but no p95: interpolate between them (said in the report).
  const p95 = result.latency.p90 + (result.latency.p97_5 - result.latency.p90) * (5 / 7.5);
  return {
    tool: 'autocannon',
    requests: result.requests.total,
    rps: result.requests.average,
    p50Ms: result.latency.p50,
    p95Ms: p95,
    p99Ms: result.latency.p99,
    errors: result.errors + result.timeouts,
    non2xx: result.non2xx,
  };
}

/** Runs one load: wrk (C, cheap on the load-generator core) when installed, else autocannon. */
export function runLoad(options: LoadOptions): Promise<LoadResult> {
  return hasWrk ? viaWrk(options) : viaAutocannon(options);
}
