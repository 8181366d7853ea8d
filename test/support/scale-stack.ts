import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { readState } from '../../stack/stack.js';
import { sharedStack, type TestStack } from './stack.js';

/**
 * The scale stage as the tests and the replica bench's smoke test share it (one bring-up per
 * `npm test` run): --autoscale on every server (1–2 workers, a decision a second) and, when the
 * Debian monitoring tools are installed, --monitoring. The edge's per-client API rate is lifted:
 * the callers send hundreds of requests from one address.
 */
export function scaleStackArgs(monitoring: boolean): string[] {
  return [
    ...['--env', 'RATE_LIMIT_MAX=1000000'],
    ...['--autoscale', '--autoscale-min', '1', '--autoscale-max', '2'],
    ...['--autoscale-options', 'period=1 warmup=2'],
    ...(monitoring ? ['--monitoring'] : []),
  ];
}

export function scaleStack(monitoring: boolean): Promise<TestStack> {
  process.env.STACK_NGINX_API_RATE = '100000';
  return sharedStack('scale', scaleStackArgs(monitoring));
}

/** Sums a counter or gauge over every worker's /metrics, by one label set (`{a="b",…}` text). */
export async function sumMetric(urls: readonly string[], name: string, labels = ''): Promise<number> {
  let total = 0;
  for (const url of urls) {
    const text = await (await fetch(url)).text();
    for (const line of text.split('\n')) {
      if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
      if (labels !== '' && !line.includes(labels)) continue;
      total += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
  }
  return total;
}

/** `npm run user:create-admin` with the app servers' database settings (through PgBouncer). */
export function createStackAdmin(stack: TestStack, username: string, password: string): Promise<void> {
  const state = readState(stack.stateDir);
  const env = state?.servers[0]?.env;
  if (state === null || env === undefined) throw new Error('no scale stack');
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [
        join(state.root, 'dist', 'cli', 'create-admin.js'),
        ...['--email', `${username}@example.com`, '--username', username],
      ],
      { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] },
    );
    let output = '';
    child.stdout.on('data', (c) => {
      output += c;
    });
    child.stderr.on('data', (c) => {
      output += c;
    });
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`create-admin: ${output}`))));
    child.stdin.end(`${password}\n`);
  });
}
