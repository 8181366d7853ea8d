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

function reachable(url: string, defaultPort: number): Promise<boolean> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = createConnection({ host: hostname || '127.0.0.1', port: Number(port || defaultPort) });
    socket.setTimeout(3000);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('timeout', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', () => resolve(false));
  });
}

// Started on import, before any suite runs (a suite already running could block the event loop
// and make a pending check time out).
const checks: Record<Service, Promise<boolean>> = {
  postgres: reachable(postgresAdminUrl, 5432),
  redis: reachable(redisUrl, 6379),
};

export function serviceAvailable(service: Service): Promise<boolean> {
  return checks[service];
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
