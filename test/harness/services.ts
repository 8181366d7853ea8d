import { createConnection } from 'node:net';

/**
 * Where the test suites find the machine's PostgreSQL and Redis, and what happens when one is
 * missing: outside CI the suites that need it are skipped with the install command; with CI=true a
 * missing server fails the run, so a green CI run always means every suite ran.
 */

export const postgresAdminUrl =
  process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
export const redisUrl = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

const install = {
  postgres:
    'apt-get install -y postgresql && pg_ctlcluster --skip-systemctl-redirect 15 main start (or set TEST_DATABASE_URL)',
  redis: 'apt-get install -y redis-server && redis-server --daemonize yes (or set TEST_REDIS_URL)',
} as const;

export type Service = keyof typeof install;

/**
 * One TCP connect attempt. A timer never decides on its own: when the timeout fires, the verdict
 * waits for the check phase (setImmediate), after the poll phase has delivered any `connect` that
 * was already complete. Without that, a test file whose loading blocked the event loop for longer
 * than the timeout saw "unreachable" for a server that had long accepted the connection.
 */
function connectOnce(host: string, port: number, timeoutMs: number): Promise<'up' | 'refused' | 'timeout'> {
  return new Promise((resolve) => {
    let settled = false;
    const finish = (verdict: 'up' | 'refused' | 'timeout') => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(verdict);
    };
    const socket = createConnection({ host, port });
    socket.once('connect', () => finish('up'));
    socket.once('error', () => finish('refused'));
    const timer = setTimeout(() => setImmediate(() => finish('timeout')), timeoutMs);
  });
}

/**
 * Reachable if any of several attempts connects within a generous overall deadline: a busy machine
 * (CI shares two cores) must never turn a running server into a failed run.
 */
async function reachable(url: string, defaultPort: number): Promise<boolean> {
  const { hostname, port } = new URL(url);
  const host = hostname || '127.0.0.1';
  const deadline = Date.now() + 30_000;
  for (let attempt = 1; ; attempt++) {
    const verdict = await connectOnce(host, Number(port || defaultPort), 10_000);
    if (verdict === 'up') return true;
    // A refused connection is a real answer, but give a server that is starting a few more tries.
    if (attempt >= 5 || Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, verdict === 'refused' ? 500 : 0));
  }
}

// Probed lazily, once per service, when a suite first asks; the answer is shared by every suite
// in the process.
const checks = new Map<Service, Promise<boolean>>();
const targets: Record<Service, [string, number]> = {
  postgres: [postgresAdminUrl, 5432],
  redis: [redisUrl, 6379],
};

export function serviceAvailable(service: Service): Promise<boolean> {
  let check = checks.get(service);
  if (!check) {
    const [url, port] = targets[service];
    check = reachable(url, port);
    checks.set(service, check);
  }
  return check;
}

export const inCi = process.env.CI === 'true' || process.env.CI === '1';

/**
 * For `describe(name, { skip: await skipUnless('postgres') }, ...)`: false when the service is up;
 * a skip message outside CI; under CI, an error that fails the file.
 */
export async function skipUnless(...services: Service[]): Promise<string | false> {
  for (const service of services) {
    if (await serviceAvailable(service)) continue;
    const message = `${service} is not reachable; install and start it: ${install[service]}`;
    if (inCi) throw new Error(`CI requires ${message}`);
    return message;
  }
  return false;
}
