import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The only reader of process.env. Every variable is declared once, through the reader below, which
 * both parses it and records its documentation: `describeConfig()` lists every variable with its
 * default, and a test checks that README.md and .env.example mention each one.
 */

export type NodeEnv = 'development' | 'production' | 'test';
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export interface Config {
  readonly env: NodeEnv;
  readonly server: {
    readonly host: string;
    readonly port: number;
    readonly bodyLimitBytes: number;
    readonly requestTimeoutMs: number;
    readonly headersTimeoutMs: number;
    readonly keepAliveTimeoutMs: number;
    /** How often Node checks the header and request timeouts of open connections. */
    readonly connectionsCheckIntervalMs: number;
    /** Open connections this process accepts at most (lowered to fit the file-descriptor limit). */
    readonly maxConnections: number;
    /** Requests one keep-alive connection may carry before the server closes it (0: no limit). */
    readonly maxRequestsPerSocket: number;
    /** Addresses (IPs, CIDRs or proxy-addr keywords) whose X-Forwarded-For is believed. */
    readonly trustProxy: readonly string[];
    readonly staticDir: string;
    /** Serve /docs (Swagger UI and the OpenAPI document). */
    readonly docsEnabled: boolean;
  };
  readonly log: {
    readonly level: LogLevel;
    readonly slowRequestMs: number;
    /** Set when this process is a PM2 worker: the logger then writes where PM2 captures output. */
    readonly pm2: Pm2LogTarget | undefined;
  };
  readonly database: {
    /** PostgreSQL connection string; absent means the embedded SQLite database. */
    readonly url: string | undefined;
    /** Where the migration commands connect (the owner role, not PgBouncer); absent: `url`. */
    readonly migrationUrl: string | undefined;
    readonly sqlitePath: string;
    readonly poolMax: number;
    readonly connectTimeoutMs: number;
    readonly statementTimeoutMs: number;
    /** A request's database work ends this long after its body arrived (0: no budget; database-deadline.ts). */
    readonly requestBudgetMs: number;
    readonly migrateOnStart: boolean;
    /** The deployment's layout, for the connection budget checked at start-up (connection-budget.ts). */
    readonly budget: {
      readonly servers: number;
      readonly workersPerServer: number;
      readonly reserved: number;
      readonly onOverflow: 'warn' | 'refuse' | 'off';
    };
    /** Streaming replicas for reads (decision 0030); empty: the primary serves every read. */
    readonly replicas: {
      readonly urls: readonly string[];
      readonly maxLagBytes: number;
      readonly maxLagSeconds: number;
      readonly checkIntervalMs: number;
      readonly waitMs: number;
    };
    /** Start-up waits this long for an unreachable database, then fails; 0: forever. */
    readonly waitSeconds: number;
  };
  readonly redis: {
    readonly url: string | undefined;
    readonly keyPrefix: string;
    readonly commandTimeoutMs: number;
    readonly connectTimeoutMs: number;
  };
  readonly cors: {
    /** Exact origins allowed to call the API from a browser; `*` alone means any origin, without credentials. */
    readonly origins: readonly string[];
  };
  readonly rateLimit: {
    readonly max: number;
    readonly windowMs: number;
    /** Percent of `max` a process may count before Redis has it (decision 0105). */
    readonly localPercent: number;
    readonly authMax: number;
    readonly authWindowMs: number;
  };
  readonly metrics: {
    readonly token: string | undefined;
    /** Tokens still accepted while scrapers move to `token` (rotation). */
    readonly previousTokens: readonly string[];
    /**
     * When set, each process serves /metrics on its own port (this + `instance`) instead of the main
     * port: under PM2 every worker is scraped and the totals add up.
     */
    readonly port: number | undefined;
    /** The worker number PM2 gives each cluster instance (NODE_APP_INSTANCE); 0 otherwise. */
    readonly instance: number;
  };
  /** What is running: in the build-info metric and Sentry's release. */
  readonly build: {
    readonly version: string;
    /** Commit of the running build; 'unknown' when neither BUILD_COMMIT nor git tells. */
    readonly commit: string;
  };
  readonly sentry: {
    /** Unset: Sentry is never loaded (no cost on any request). */
    readonly dsn: string | undefined;
    readonly environment: string;
    readonly release: string;
  };
  readonly auth: {
    /** HMAC key that signs access tokens (HS256): the key ring's current key (decision 0055). */
    readonly jwtSecret: string;
    /** Keys that still verify tokens they signed (rotation step 2 → 3). */
    readonly jwtPreviousSecrets: readonly string[];
    /** Keys that verify but do not sign yet (rotation step 1 → 2). */
    readonly jwtNextSecrets: readonly string[];
    /** True when JWT_SECRET was unset and a random per-process key was made (development only). */
    readonly jwtSecretGenerated: boolean;
    readonly issuer: string;
    readonly audience: string;
    readonly accessTokenTtlSeconds: number;
    readonly refreshAbsoluteTtlSeconds: number;
    readonly refreshIdleTtlSeconds: number;
    /** A spent refresh token presented again this soon gets a new token instead of ending the login (0: off). */
    readonly refreshReuseIntervalSeconds: number;
    readonly passwordAlgorithm: 'argon2id' | 'bcrypt';
    readonly argon2: {
      readonly memoryKib: number;
      readonly iterations: number;
      readonly parallelism: number;
    };
    readonly bcryptCost: number;
    readonly loginMaxFailures: number;
    readonly loginFailureWindowSeconds: number;
    readonly lockoutBaseSeconds: number;
    readonly lockoutMaxSeconds: number;
  };
  readonly shutdown: {
    readonly graceMs: number;
    readonly timeoutMs: number;
  };
  /** ms the event loop may stall before the process kills itself (0: off; src/infra/watchdog.ts). */
  readonly watchdogMs: number;
  readonly commerce: {
    readonly currency: string;
  };
  readonly cache: {
    /** False: every read goes to the database. */
    readonly enabled: boolean;
    /** Bound of the in-process cache (per process), or of the local tier in front of Redis. */
    readonly maxEntries: number;
    /** With Redis: hits answered from a per-process copy kept coherent by CLIENT TRACKING (decision 0104). */
    readonly localTier: boolean;
    readonly productTtlSeconds: number;
    readonly productListTtlSeconds: number;
    readonly userTtlSeconds: number;
  };
  readonly idempotency: {
    readonly ttlHours: number;
    readonly lockSeconds: number;
    /** 0: no periodic cleanup in the service (run the CLI instead). */
    readonly cleanupIntervalSeconds: number;
  };
  /** Mail, password reset, email verification and jobs (issue 16, decisions 0060–0062). */
  readonly mail: {
    /** smtp:// or smtps:// URL; unset: messages are printed (development) or dropped with a warning. */
    readonly smtpUrl: string | undefined;
    readonly from: string;
    readonly timeoutMs: number;
  };
  readonly accounts: {
    /** Origin and path prefix of the links in mails (the storefront's pages). */
    readonly publicBaseUrl: string;
    readonly passwordResetTtlSeconds: number;
    readonly emailVerificationTtlSeconds: number;
    /** Mails of one kind to one address per window; more are silently not sent. */
    readonly mailsPerAddress: number;
    readonly mailWindowSeconds: number;
    /** Actions an unverified account may not take. */
    readonly verificationRequiredFor: readonly VerifiedAction[];
  };
  readonly jobs: {
    /** The service runs job workers itself (prototype); false when `npm run worker` runs them. */
    readonly inProcess: boolean;
    readonly concurrency: number;
    readonly pollIntervalMs: number;
    readonly leaseSeconds: number;
    readonly maxAttempts: number;
    readonly backoffBaseMs: number;
    readonly retentionHours: number;
    readonly sessionCleanupIntervalSeconds: number;
    /** Base URL of the service for the cache warm-up after a deploy. */
    readonly warmUpUrl: string;
    readonly warmUpPages: number;
    /** `npm run worker` serves /metrics on this port (0: not at all). */
    readonly metricsPort: number;
  };
  readonly tracing: {
    readonly enabled: boolean;
    /** OTLP/HTTP traces endpoint; unset with tracing on: spans are kept in memory only (tests). */
    readonly otlpEndpoint: string | undefined;
    readonly serviceName: string;
    readonly samplePercent: number;
  };
}

export const verifiedActions = ['orders'] as const;
export type VerifiedAction = (typeof verifiedActions)[number];

/** Where PM2 wants a worker's stdout: its log files and its date format (from PM2's own env). */
export interface Pm2LogTarget {
  /** out_file and log_file (combined) as PM2 resolved them; empty when both are /dev/null. */
  readonly files: readonly string[];
  /** PM2's `log_date_format` (set by `time: true` or explicitly); undefined: no timestamp prefix. */
  readonly dateFormat: string | undefined;
}

export interface VariableDoc {
  readonly name: string;
  readonly default: string;
  readonly description: string;
  readonly secret: boolean;
}

export class ConfigError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`Invalid configuration:\n  - ${problems.join('\n  - ')}`);
    this.name = 'ConfigError';
  }
}

type Env = Readonly<Record<string, string | undefined>>;

const projectRoot = fileURLToPath(new URL('..', import.meta.url));

let packageVersionMemo: string | undefined;
function packageVersion(): string {
  packageVersionMemo ??= (
    JSON.parse(readFileSync(resolve(projectRoot, 'package.json'), 'utf8')) as { version: string }
  ).version;
  return packageVersionMemo;
}

let gitCommitMemo: string | undefined;
/** The checked-out commit (12 hex digits), asked once per process; 'unknown' outside a git checkout. */
function gitCommit(): string {
  if (gitCommitMemo === undefined) {
    const result = spawnSync('git', ['rev-parse', '--short=12', 'HEAD'], {
      cwd: projectRoot,
      encoding: 'utf8',
      timeout: 5000,
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    const commit = result.status === 0 ? result.stdout.trim() : '';
    gitCommitMemo = /^[0-9a-f]{7,40}$/.test(commit) ? commit : 'unknown';
  }
  return gitCommitMemo;
}

/** Reads variables, collecting every problem (not only the first) and the documentation of each. */
class EnvReader {
  readonly problems: string[] = [];
  readonly docs: VariableDoc[] = [];

  constructor(private readonly env: Env) {}

  private document(name: string, def: string, description: string, secret = false): void {
    this.docs.push({ name, default: def, description, secret });
  }

  /** An empty string counts as unset, so `FOO=` in an env file falls back to the default. */
  private raw(name: string): string | undefined {
    const value = this.env[name];
    return value === undefined || value.trim() === '' ? undefined : value.trim();
  }

  string(name: string, def: string, description: string): string {
    this.document(name, def === '' ? '(empty)' : def, description);
    return this.raw(name) ?? def;
  }

  optionalString(name: string, description: string): string | undefined {
    this.document(name, '(unset)', description);
    return this.raw(name);
  }

  /** A secret may come from NAME or from a file named by NAME_FILE (Docker and Kubernetes secrets). */
  secret(name: string, description: string): string | undefined {
    this.document(name, '(unset)', `${description} Also read from the file named by \`${name}_FILE\`.`, true);
    const direct = this.raw(name);
    const file = this.raw(`${name}_FILE`);
    if (direct !== undefined && file !== undefined) {
      this.problems.push(`${name} and ${name}_FILE are both set; set only one`);
      return undefined;
    }
    if (file === undefined) return direct;
    try {
      const value = readFileSync(file, 'utf8').trim();
      if (value === '') this.problems.push(`${name}_FILE names an empty file (${file})`);
      return value === '' ? undefined : value;
    } catch (err) {
      this.problems.push(
        `${name}_FILE cannot be read (${file}): ${(err as NodeJS.ErrnoException).code ?? 'error'}`,
      );
      return undefined;
    }
  }

  /** A comma-separated list of secrets (NAME or NAME_FILE); empty when unset. */
  secretList(name: string, description: string): string[] {
    return (this.secret(name, description) ?? '')
      .split(/[,\n]/)
      .map((item) => item.trim())
      .filter((item) => item !== '');
  }

  int(name: string, def: number, min: number, max: number, description: string): number {
    this.document(name, String(def), description);
    const value = this.raw(name);
    if (value === undefined) return def;
    if (!/^-?\d+$/.test(value)) {
      this.problems.push(`${name} must be an integer between ${min} and ${max} (got "${value}")`);
      return def;
    }
    const n = Number(value);
    if (n < min || n > max) {
      this.problems.push(`${name} must be an integer between ${min} and ${max} (got ${value})`);
      return def;
    }
    return n;
  }

  bool(name: string, def: boolean | undefined, defDoc: string, description: string): boolean | undefined {
    this.document(name, defDoc, description);
    const value = this.raw(name)?.toLowerCase();
    if (value === undefined) return def;
    if (['1', 'true', 'yes', 'on'].includes(value)) return true;
    if (['0', 'false', 'no', 'off'].includes(value)) return false;
    this.problems.push(`${name} must be true or false (got "${value}")`);
    return def;
  }

  oneOf<T extends string>(name: string, values: readonly T[], def: T, description: string): T {
    this.document(name, def, `${description} One of: ${values.join(', ')}.`);
    const value = this.raw(name);
    if (value === undefined) return def;
    if ((values as readonly string[]).includes(value)) return value as T;
    this.problems.push(`${name} must be one of ${values.join(', ')} (got "${value}")`);
    return def;
  }

  list(name: string, description: string): string[] {
    this.document(name, '(empty)', description);
    const value = this.raw(name);
    if (value === undefined) return [];
    return value
      .split(',')
      .map((item) => item.trim())
      .filter((item) => item !== '');
  }

  problem(message: string): void {
    this.problems.push(message);
  }
}

function checkUrl(reader: EnvReader, name: string, value: string | undefined, protocols: string[]): void {
  if (value === undefined) return;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    // The value may hold a password: name the variable, never echo the value.
    reader.problem(`${name} is not a valid URL`);
    return;
  }
  if (!protocols.includes(url.protocol)) {
    reader.problem(`${name} must use ${protocols.join(' or ')} (got "${url.protocol}")`);
  }
}

const proxyKeywords = new Set(['loopback', 'linklocal', 'uniquelocal']);

function isAddressOrCidr(entry: string): boolean {
  if (proxyKeywords.has(entry)) return true;
  const [address, prefix, extra] = entry.split('/');
  if (address === undefined || extra !== undefined) return false;
  const family = isIP(address);
  if (family === 0) return false;
  if (prefix === undefined) return true;
  if (!/^\d{1,3}$/.test(prefix)) return false;
  return Number(prefix) <= (family === 4 ? 32 : 128);
}

function isOrigin(entry: string): boolean {
  try {
    const url = new URL(entry);
    return (url.protocol === 'http:' || url.protocol === 'https:') && url.origin === entry;
  } catch {
    return false;
  }
}

/**
 * PM2 puts its own bookkeeping into each worker's environment (pm_id, pm_out_log_path, …). They are
 * PM2's, not settings for the operator, so they are read here without being documented.
 */
function pm2LogTarget(env: Env): Pm2LogTarget | undefined {
  if (env.pm_id === undefined) return undefined;
  const real = (path: string | undefined) =>
    path === undefined || path === '' || path === 'NULL' || path === '/dev/null' ? [] : [path];
  const files = [...real(env.pm_out_log_path), ...real(env.pm_log_path)];
  const dateFormat =
    env.log_date_format === undefined || env.log_date_format === '' ? undefined : env.log_date_format;
  return { files, dateFormat };
}

function read(env: Env): { config: Config; reader: EnvReader } {
  const r = new EnvReader(env);

  const nodeEnv = r.oneOf(
    'NODE_ENV',
    ['development', 'production', 'test'] as const,
    'development',
    'Run mode.',
  );

  const host = r.string('HOST', '0.0.0.0', 'Interface to listen on.');
  const port = r.int('PORT', 3000, 0, 65535, 'HTTP port (0 picks a free port).');
  const bodyLimitBytes = r.int(
    'BODY_LIMIT_BYTES',
    102_400,
    1024,
    10_485_760,
    'Largest request body; larger → 413.',
  );
  const requestTimeoutMs = r.int(
    'REQUEST_TIMEOUT_MS',
    30_000,
    1000,
    600_000,
    'Longest time to receive a whole request (slow-loris guard).',
  );
  const headersTimeoutMs = r.int(
    'HEADERS_TIMEOUT_MS',
    15_000,
    1000,
    600_000,
    'Longest time to receive request headers.',
  );
  const keepAliveTimeoutMs = r.int(
    'KEEP_ALIVE_TIMEOUT_MS',
    72_000,
    1000,
    600_000,
    'Idle keep-alive socket lifetime; keep it above the proxy’s upstream keep-alive (nginx: 60 s).',
  );
  const connectionsCheckIntervalMs = r.int(
    'CONNECTIONS_CHECK_INTERVAL_MS',
    1000,
    100,
    30_000,
    'How often the header and request timeouts are enforced: a slow client is cut off at most this long after its timeout (Node’s own default is 30 s).',
  );
  if (requestTimeoutMs < headersTimeoutMs)
    r.problem('REQUEST_TIMEOUT_MS must not be less than HEADERS_TIMEOUT_MS');
  const maxConnections = r.int(
    'MAX_CONNECTIONS',
    10_000,
    10,
    1_000_000,
    'Open client connections per process; more are closed at once (logged). Lowered at start-up to leave file descriptors for the database, Redis and logs. The proxy in front should limit per client (nginx limit_conn).',
  );
  const maxRequestsPerSocket = r.int(
    'MAX_REQUESTS_PER_SOCKET',
    1000,
    0,
    1_000_000,
    'Requests one keep-alive connection carries before it is closed (0: no limit); nginx’s keepalive_requests is 1000 too.',
  );
  const trustProxy = r.list(
    'TRUST_PROXY',
    'Comma-separated proxy addresses or CIDRs (or loopback, linklocal, uniquelocal) whose X-Forwarded-For is trusted. Empty: the peer address is the client.',
  );
  for (const entry of trustProxy) {
    if (!isAddressOrCidr(entry))
      r.problem(`TRUST_PROXY entry "${entry}" is not an IP address, CIDR or keyword`);
  }
  const staticDir = r.string(
    'STATIC_DIR',
    'public',
    'Directory of static files, relative to the project root.',
  );

  const docsEnabled = r.bool(
    'DOCS_ENABLED',
    undefined,
    'false in production, true otherwise',
    'Serve the API documentation at /docs (Swagger UI, OpenAPI document). Off in production unless set: the full route map helps an attacker more than a customer.',
  );

  const logLevel = r.oneOf(
    'LOG_LEVEL',
    ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const,
    'info',
    'Log level.',
  );
  const slowRequestMs = r.int(
    'SLOW_REQUEST_MS',
    1000,
    1,
    600_000,
    'Requests slower than this are logged at warn.',
  );

  const databaseUrl = r.secret('DATABASE_URL', 'PostgreSQL connection string. Unset: embedded SQLite.');
  checkUrl(r, 'DATABASE_URL', databaseUrl, ['postgres:', 'postgresql:']);
  const migrationUrl = r.secret(
    'DATABASE_MIGRATION_URL',
    'PostgreSQL connection string of the migrations and the logical backups (`npm run db:migrate`, `db:migrate:production`, so `deploy.sh`, and `db:backup`): the owner role (shipshape_owner) straight to PostgreSQL — never PgBouncer, whose transaction pooling breaks the migrator’s session lock and pg_dump’s session settings. Unset: DATABASE_URL. The service itself never uses it.',
  );
  checkUrl(r, 'DATABASE_MIGRATION_URL', migrationUrl, ['postgres:', 'postgresql:']);
  if (migrationUrl !== undefined && databaseUrl === undefined)
    r.problem('DATABASE_MIGRATION_URL needs DATABASE_URL (the migrations of which PostgreSQL database?)');
  const sqlitePath = r.string(
    'SQLITE_PATH',
    'data/shipshape.db',
    'SQLite file, relative to the project root (`:memory:` for a throwaway database).',
  );
  const poolMax = r.int('DATABASE_POOL_MAX', 10, 1, 1000, 'PostgreSQL pool size per process.');
  const connectTimeoutMs = r.int(
    'DATABASE_CONNECT_TIMEOUT_MS',
    5000,
    100,
    120_000,
    'Wait at most this long for a PostgreSQL connection — a free one from the full pool, or a new one — then answer 503 with Retry-After.',
  );
  const budgetServers = r.int(
    'DATABASE_BUDGET_SERVERS',
    1,
    1,
    10_000,
    'App servers sharing the database (for the connection budget stated at start-up).',
  );
  const budgetWorkers = r.int(
    'DATABASE_BUDGET_WORKERS',
    0,
    0,
    10_000,
    'Processes per app server that open a pool (PM2 workers, and `npm run worker` processes if any) for the connection budget; 0: the number of usable cores (what PM2’s `instances: max` starts).',
  );
  const budgetReserved = r.int(
    'DATABASE_BUDGET_RESERVED',
    10,
    0,
    10_000,
    'Connections kept free for everything else: migrations, backups, monitoring, reporting, an operator’s psql.',
  );
  const budgetOnOverflow = r.oneOf(
    'DATABASE_BUDGET_CHECK',
    ['warn', 'refuse', 'off'] as const,
    'warn',
    'When pool size × workers × servers + reserved exceeds what max_connections leaves: log a warning, refuse to start, or skip the check (behind PgBouncer the pooler’s limits apply instead).',
  );
  const statementTimeoutMs = r.int(
    'DATABASE_STATEMENT_TIMEOUT_MS',
    10_000,
    100,
    3_600_000,
    'PostgreSQL statement_timeout inside the service’s transactions (SET LOCAL; single statements run under the role’s setting, deploy/postgres/roles.sql).',
  );
  const requestBudgetMs = r.int(
    'DATABASE_REQUEST_BUDGET_MS',
    10_000,
    0,
    3_600_000,
    'PostgreSQL: how long a request’s database work may go on once its body has arrived; later round trips fail, one in flight is cut (503 with Retry-After, the transaction rolled back). A COMMIT already sent is never cut; the WAL-position reads after it get at most 1 s more. 0: no budget.',
  );
  const migrateOnStart = r.bool(
    'DATABASE_MIGRATE_ON_START',
    undefined,
    'true on SQLite, false on PostgreSQL',
    'Apply pending migrations when the service starts.',
  );
  const waitSeconds = r.int(
    'DATABASE_WAIT_SECONDS',
    60,
    0,
    86_400,
    'At start-up, wait this long for an unreachable database (logging why every 10 s), then exit 1 (0: wait forever).',
  );

  const replicaUrls = (
    r.secret(
      'DATABASE_REPLICA_URLS',
      'Comma-separated connection strings of streaming read replicas. Reads that allow it go to a healthy replica; writes, transactions and reads that must see a recent write go to the primary or a replica that has replayed it.',
    ) ?? ''
  )
    .split(',')
    .map((url) => url.trim())
    .filter((url) => url !== '');
  for (const [i, url] of replicaUrls.entries())
    checkUrl(r, `DATABASE_REPLICA_URLS (entry ${i + 1})`, url, ['postgres:', 'postgresql:']);
  if (replicaUrls.length > 0 && databaseUrl === undefined)
    r.problem('DATABASE_REPLICA_URLS needs DATABASE_URL (replicas of which primary?)');
  const replicaMaxLagBytes = r.int(
    'DATABASE_REPLICA_MAX_LAG_BYTES',
    16_777_216,
    0,
    1_099_511_627_776,
    'A replica more WAL bytes behind the primary than this is skipped.',
  );
  const replicaMaxLagSeconds = r.int(
    'DATABASE_REPLICA_MAX_LAG_SECONDS',
    10,
    0,
    86_400,
    'A replica whose replay is this many seconds behind is skipped.',
  );
  const replicaCheckIntervalMs = r.int(
    'DATABASE_REPLICA_CHECK_INTERVAL_MS',
    5000,
    50,
    600_000,
    'How often each replica’s health and lag are checked (plus up to 50 % random jitter).',
  );
  const replicaWaitMs = r.int(
    'DATABASE_REPLICA_WAIT_MS',
    30,
    0,
    1000,
    'A read that must see a recent write waits at most this long for a replica to replay it, then uses the primary.',
  );

  const redisUrl = r.secret('REDIS_URL', 'Redis connection string. Unset: in-process cache and limits.');
  checkUrl(r, 'REDIS_URL', redisUrl, ['redis:', 'rediss:']);
  const redisKeyPrefix = r.string(
    'REDIS_KEY_PREFIX',
    'shipshape:',
    'Prefix of every Redis key the service writes.',
  );
  const redisCommandTimeoutMs = r.int(
    'REDIS_COMMAND_TIMEOUT_MS',
    250,
    10,
    60_000,
    'A Redis command slower than this counts as failed; the service carries on without Redis.',
  );
  const redisConnectTimeoutMs = r.int(
    'REDIS_CONNECT_TIMEOUT_MS',
    2000,
    100,
    60_000,
    'Redis connect timeout.',
  );

  const corsOrigins = r.list(
    'CORS_ORIGINS',
    'Comma-separated browser origins allowed to call the API with credentials (e.g. https://shop.example.com). `*` alone allows any origin without credentials. Empty: no cross-origin access.',
  );
  for (const origin of corsOrigins) {
    if (origin === '*') {
      if (corsOrigins.length > 1) r.problem('CORS_ORIGINS: `*` cannot be combined with other origins');
    } else if (origin === 'null') {
      r.problem('CORS_ORIGINS must not contain "null": sandboxed pages and file: URLs all send it');
    } else if (!isOrigin(origin)) {
      r.problem(`CORS_ORIGINS entry "${origin}" is not an origin like https://example.com`);
    }
  }

  const rateLimitMax = r.int(
    'RATE_LIMIT_MAX',
    300,
    1,
    1_000_000_000,
    'Requests per client IP per window on /api.',
  );
  const rateLimitWindowMs = r.int('RATE_LIMIT_WINDOW_MS', 60_000, 1000, 86_400_000, 'Rate-limit window.');
  const rateLimitLocalPercent = r.int(
    'RATE_LIMIT_LOCAL_PERCENT',
    1,
    0,
    10,
    'With `REDIS_URL`: the share of `RATE_LIMIT_MAX` each process may count before Redis has it (hits sent in batches, no round trip per request; decision 0105). The shared budget is exceeded by at most processes × this share. 0: every request waits for Redis. The auth limit is always exact.',
  );
  const authRateLimitMax = r.int(
    'AUTH_RATE_LIMIT_MAX',
    20,
    1,
    1_000_000_000,
    'Requests per client IP per window on the credential-taking /api/auth routes.',
  );
  const authRateLimitWindowMs = r.int(
    'AUTH_RATE_LIMIT_WINDOW_MS',
    60_000,
    1000,
    86_400_000,
    'Window of the auth rate limit.',
  );

  const metricsToken = r.secret(
    'METRICS_TOKEN',
    'When set, /metrics requires `Authorization: Bearer <token>`.',
  );
  const metricsPreviousTokens = r.secretList(
    'METRICS_TOKEN_PREVIOUS',
    'Comma-separated metrics tokens still accepted besides METRICS_TOKEN, while scrapers move to the new one (README: Rotating secrets).',
  );
  if (metricsPreviousTokens.length > 0 && metricsToken === undefined)
    r.problem('METRICS_TOKEN_PREVIOUS needs METRICS_TOKEN (the token scrapers move to)');
  const metricsPort = r.int(
    'METRICS_PORT',
    0,
    0,
    65535,
    'Serve /metrics on this port plus the worker number (NODE_APP_INSTANCE) instead of the main port. 0: on the main port.',
  );
  const appInstance = r.int(
    'NODE_APP_INSTANCE',
    0,
    0,
    10_000,
    'Worker number, set by PM2 in cluster mode (offsets METRICS_PORT); leave unset.',
  );
  if (metricsPort > 0 && metricsPort + appInstance > 65535)
    r.problem('METRICS_PORT + NODE_APP_INSTANCE exceeds 65535');

  const buildCommit =
    r.optionalString(
      'BUILD_COMMIT',
      'Commit of the running build (build-info metric, Sentry release). Unset: asked of git in the project directory, else `unknown`.',
    ) ?? gitCommit();
  if (!/^[0-9A-Za-z._-]{1,64}$/.test(buildCommit))
    r.problem('BUILD_COMMIT must be 1–64 letters, digits, dots, dashes or underscores');
  const sentryDsn = r.secret(
    'SENTRY_DSN',
    'Sentry DSN: 5xx answers and uncaught errors are reported there (never bodies, cookies, Authorization, passwords or tokens). Unset: Sentry is not loaded at all.',
  );
  const sentryEnvironment = r.optionalString('SENTRY_ENVIRONMENT', 'Sentry environment. Unset: NODE_ENV.');
  const sentryRelease = r.optionalString(
    'SENTRY_RELEASE',
    'Sentry release. Unset: `shipshape@<package version>+<BUILD_COMMIT>`.',
  );

  const jwtSecretGiven = r.secret(
    'JWT_SECRET',
    'Key that signs access tokens (HS256), at least 32 bytes. Required in production; in development an unset key is replaced by a random one per process (tokens then die with the process).',
  );
  if (jwtSecretGiven !== undefined && Buffer.byteLength(jwtSecretGiven) < 32) {
    if (nodeEnv === 'production') r.problem('JWT_SECRET must be at least 32 bytes in production');
  }
  if (jwtSecretGiven === undefined && nodeEnv === 'production') {
    r.problem(
      'JWT_SECRET is required in production (at least 32 random bytes, e.g. `openssl rand -base64 48`)',
    );
  }
  const jwtPreviousSecrets = r.secretList(
    'JWT_SECRET_PREVIOUS',
    'Comma-separated former signing keys: tokens they signed still verify until they expire; new tokens are signed with JWT_SECRET. Drop a key here one access-token lifetime after it stopped signing (README: Rotating secrets).',
  );
  const jwtNextSecrets = r.secretList(
    'JWT_SECRET_NEXT',
    'Comma-separated signing keys about to be promoted: they verify tokens but sign none yet, so servers promoted earlier can already sign with them (README: Rotating secrets).',
  );
  if (jwtSecretGiven === undefined && jwtPreviousSecrets.length + jwtNextSecrets.length > 0)
    r.problem('JWT_SECRET_PREVIOUS and JWT_SECRET_NEXT need JWT_SECRET (the key that signs)');
  for (const [name, keys] of [
    ['JWT_SECRET_PREVIOUS', jwtPreviousSecrets],
    ['JWT_SECRET_NEXT', jwtNextSecrets],
  ] as const) {
    if (nodeEnv === 'production' && keys.some((key) => Buffer.byteLength(key) < 32))
      r.problem(`every key in ${name} must be at least 32 bytes in production`);
  }
  const jwtIssuer = r.string('JWT_ISSUER', 'shipshape', 'The `iss` claim of access tokens.');
  const jwtAudience = r.string('JWT_AUDIENCE', 'shipshape-api', 'The `aud` claim of access tokens.');
  const accessTokenTtlSeconds = r.int('ACCESS_TOKEN_TTL_SECONDS', 900, 30, 86_400, 'Access-token lifetime.');
  const refreshAbsoluteTtlSeconds = r.int(
    'REFRESH_TOKEN_ABSOLUTE_TTL_SECONDS',
    2_592_000,
    300,
    31_536_000,
    'A login (refresh-token family) ends this long after it began, however active (30 days).',
  );
  const refreshIdleTtlSeconds = r.int(
    'REFRESH_TOKEN_IDLE_TTL_SECONDS',
    604_800,
    60,
    31_536_000,
    'A refresh token unused this long is dead (7 days).',
  );
  const refreshReuseIntervalSeconds = r.int(
    'REFRESH_TOKEN_REUSE_INTERVAL_SECONDS',
    0,
    0,
    60,
    'A spent refresh token presented again within this many seconds of its first use gets a new token of the same login instead of ending it as theft (two tabs, a retried request). 0, the default, is strict RFC 9700 reuse detection; see docs/decisions/0050-refresh-token-reuse-interval.md.',
  );
  const passwordAlgorithm = r.oneOf(
    'PASSWORD_HASH_ALGORITHM',
    ['argon2id', 'bcrypt'] as const,
    'argon2id',
    'Algorithm for new password hashes; hashes of either kind always verify, and older ones are upgraded at login.',
  );
  const argon2MemoryKib = r.int(
    'ARGON2_MEMORY_KIB',
    19_456,
    256,
    4_194_304,
    'Argon2id memory cost (OWASP: 19 MiB).',
  );
  const argon2Iterations = r.int('ARGON2_ITERATIONS', 2, 1, 100, 'Argon2id time cost (OWASP: 2).');
  const argon2Parallelism = r.int('ARGON2_PARALLELISM', 1, 1, 16, 'Argon2id lanes (OWASP: 1).');
  const bcryptCost = r.int('BCRYPT_COST', 12, 4, 17, 'bcrypt cost factor (at least 12 in production).');
  if (nodeEnv === 'production') {
    if (bcryptCost < 12) r.problem('BCRYPT_COST must be at least 12 in production');
    // OWASP's Argon2id settings trade memory for passes; all of them reach at least 9 MiB × 4 passes.
    if (argon2MemoryKib < 7168 || argon2MemoryKib * argon2Iterations < 36_864) {
      r.problem(
        'ARGON2_MEMORY_KIB × ARGON2_ITERATIONS is below OWASP’s minimum (e.g. 19456 × 2) in production',
      );
    }
  }
  const loginMaxFailures = r.int(
    'LOGIN_MAX_FAILURES',
    5,
    1,
    1000,
    'Failed logins for one account within the window before it is locked for a while.',
  );
  const loginFailureWindowSeconds = r.int(
    'LOGIN_FAILURE_WINDOW_SECONDS',
    900,
    10,
    86_400,
    'Window in which failed logins are counted.',
  );
  const lockoutBaseSeconds = r.int(
    'LOGIN_LOCKOUT_BASE_SECONDS',
    30,
    1,
    86_400,
    'First lockout; each further lockout within a day doubles it.',
  );
  const lockoutMaxSeconds = r.int(
    'LOGIN_LOCKOUT_MAX_SECONDS',
    900,
    1,
    86_400,
    'Longest lockout, so an attacker cannot keep an account locked for long.',
  );

  const shutdownGraceMs = r.int(
    'SHUTDOWN_GRACE_MS',
    1000,
    0,
    120_000,
    'After SIGTERM, keep serving (readiness failing, `Connection: close`) this long before closing the listener.',
  );
  const watchdogMs = r.int(
    'EVENT_LOOP_WATCHDOG_MS',
    10_000,
    0,
    600_000,
    'A process whose event loop has not run for this long is stuck: it logs `event_loop_stalled` and kills itself (SIGKILL) so the process manager starts a fresh one. Off with a debugger attached. 0: off.',
  );
  if (watchdogMs > 0 && watchdogMs < 1000)
    r.problem('EVENT_LOOP_WATCHDOG_MS must be 0 (off) or at least 1000');
  const shutdownTimeoutMs = r.int(
    'SHUTDOWN_TIMEOUT_MS',
    10_000,
    100,
    600_000,
    'Longest shutdown, from the signal to exit (grace period included); then the process exits with code 1.',
  );
  if (shutdownGraceMs >= shutdownTimeoutMs)
    r.problem('SHUTDOWN_GRACE_MS must be less than SHUTDOWN_TIMEOUT_MS');

  const currency = r.string('CURRENCY', 'USD', 'ISO 4217 currency of every price.').toUpperCase();
  if (!/^[A-Z]{3}$/.test(currency))
    r.problem(`CURRENCY must be a three-letter ISO 4217 code (got "${currency}")`);

  const cacheEnabled = r.bool(
    'CACHE_ENABLED',
    true,
    'true',
    'false: no cache at all, every read goes to the database (to measure what the cache is worth, or to rule it out).',
  );
  const cacheMaxEntries = r.int(
    'CACHE_MAX_ENTRIES',
    10_000,
    100,
    10_000_000,
    'Entries the in-process cache keeps (least recently used go first). Each process has its own; with `REDIS_URL` the cache is in Redis and this bounds the local tier in front of it.',
  );
  const cacheLocalTier = r.bool(
    'CACHE_LOCAL_TIER',
    true,
    'true',
    'With `REDIS_URL`: answer cache hits from a copy in each process, kept coherent by Redis client-side caching (`CLIENT TRACKING`, decision 0104). false: every lookup asks Redis.',
  );
  const cacheProductTtlSeconds = r.int(
    'CACHE_PRODUCT_TTL_SECONDS',
    300,
    1,
    86_400,
    'Longest a cached product lives. Writes invalidate it at once; the TTL only bounds memory and a missed invalidation.',
  );
  const cacheProductListTtlSeconds = r.int(
    'CACHE_PRODUCT_LIST_TTL_SECONDS',
    60,
    1,
    86_400,
    'Longest a cached page of the product list lives (also invalidated by every product or stock change).',
  );
  const cacheUserTtlSeconds = r.int(
    'CACHE_USER_TTL_SECONDS',
    60,
    1,
    3_600,
    "Longest a cached account (the answer of `GET /api/users/me`) lives. Every write to the account through the service invalidates it at once; the TTL bounds a write made behind the service's back on PostgreSQL (decision 0112).",
  );
  const idempotencyTtlHours = r.int(
    'IDEMPOTENCY_KEY_TTL_HOURS',
    24,
    24,
    8760,
    'How long an `Idempotency-Key` and the response it produced are kept (at least 24 h).',
  );
  const idempotencyLockSeconds = r.int(
    'IDEMPOTENCY_LOCK_SECONDS',
    60,
    5,
    3600,
    'While the first request with an `Idempotency-Key` runs, repeats get 409; if it crashed, the key is taken over after this long.',
  );
  const idempotencyCleanupIntervalSeconds = r.int(
    'IDEMPOTENCY_CLEANUP_INTERVAL_SECONDS',
    3600,
    0,
    86_400,
    'How often the `cleanup.idempotency-keys` job deletes expired idempotency keys (0: never; run `npm run idempotency:cleanup` instead).',
  );

  // Issue 16: mail (decision 0060).
  const mailSmtpUrl = r.secret(
    'MAIL_SMTP_URL',
    'SMTP server for mail, e.g. `smtp://user:pass@mail.example.com:587` (STARTTLS when offered) or `smtps://…:465`. Unset: development prints each message on stdout; production logs a `mail_not_configured` warning and sends nothing.',
  );
  checkUrl(r, 'MAIL_SMTP_URL', mailSmtpUrl, ['smtp:', 'smtps:']);
  const mailFrom = r.string('MAIL_FROM', 'Shipshape <no-reply@shipshape.invalid>', 'Sender of every mail.');
  const mailTimeoutMs = r.int(
    'MAIL_TIMEOUT_MS',
    10_000,
    100,
    300_000,
    'Connect, greeting and socket timeout of SMTP (a hung server fails the send instead of holding it).',
  );

  const publicBaseUrl = r.string(
    'PUBLIC_BASE_URL',
    'http://localhost:3000',
    'Where the links in mails point: `<PUBLIC_BASE_URL>/#/reset-password?token=…` and `/#/verify-email?token=…` (storefront pages).',
  );
  checkUrl(r, 'PUBLIC_BASE_URL', publicBaseUrl, ['http:', 'https:']);
  const passwordResetTtlSeconds = r.int(
    'PASSWORD_RESET_TTL_SECONDS',
    1800,
    60,
    86_400,
    'Lifetime of a password-reset link (single use).',
  );
  const emailVerificationTtlSeconds = r.int(
    'EMAIL_VERIFICATION_TTL_SECONDS',
    172_800,
    300,
    2_592_000,
    'Lifetime of an email-verification link (single use).',
  );
  const accountMailsPerAddress = r.int(
    'ACCOUNT_MAILS_PER_ADDRESS',
    3,
    1,
    1000,
    'Password-reset (or verification) mails one address receives per window; further requests still answer 202 and send nothing.',
  );
  const accountMailWindowSeconds = r.int(
    'ACCOUNT_MAIL_WINDOW_SECONDS',
    3600,
    60,
    86_400,
    'Window of ACCOUNT_MAILS_PER_ADDRESS.',
  );
  const verificationRequiredFor = r.list(
    'EMAIL_VERIFICATION_REQUIRED_FOR',
    `Actions an account may take only with a verified email (403 EMAIL_NOT_VERIFIED), comma-separated: ${verifiedActions.join(', ')}. Empty: none.`,
  );
  for (const action of verificationRequiredFor) {
    if (!(verifiedActions as readonly string[]).includes(action))
      r.problem(
        `EMAIL_VERIFICATION_REQUIRED_FOR: unknown action "${action}" (known: ${verifiedActions.join(', ')})`,
      );
  }
  const jobsInProcess = r.bool(
    'JOBS_IN_PROCESS',
    true,
    'true',
    'Run the job workers inside the service (prototype). false: only `npm run worker` processes jobs (the PM2 ecosystem file sets this).',
  );
  const jobsConcurrency = r.int('JOBS_CONCURRENCY', 4, 1, 256, 'Jobs one worker process runs at once.');
  const jobsPollIntervalMs = r.int(
    'JOBS_POLL_INTERVAL_MS',
    1000,
    10,
    60_000,
    'How often an idle worker looks for due jobs (a job enqueued by the same process wakes it at once).',
  );
  const jobsLeaseSeconds = r.int(
    'JOBS_LEASE_SECONDS',
    60,
    2,
    86_400,
    'A running job whose worker has not finished it (or renewed it) this long is taken over by another worker: a killed worker delays its jobs by at most this.',
  );
  const jobsMaxAttempts = r.int(
    'JOBS_MAX_ATTEMPTS',
    5,
    1,
    100,
    'Attempts before a failing job is moved to the dead-letter state.',
  );
  const jobsBackoffBaseMs = r.int(
    'JOBS_BACKOFF_BASE_MS',
    2000,
    1,
    3_600_000,
    'Retry delay after the first failure; it doubles with each further failure (with jitter, at most an hour).',
  );
  const jobsRetentionHours = r.int(
    'JOBS_RETENTION_HOURS',
    168,
    1,
    87_600,
    'Finished jobs are deleted this long after they finished; dead ones are kept until then too.',
  );
  const sessionCleanupIntervalSeconds = r.int(
    'SESSION_CLEANUP_INTERVAL_SECONDS',
    3600,
    0,
    86_400,
    'How often the job workers delete expired sessions, refresh tokens, account tokens and old jobs (0: never).',
  );
  const jobsMetricsPort = r.int(
    'JOBS_METRICS_PORT',
    0,
    0,
    65535,
    '`npm run worker` serves its /metrics (job counters and latency, queue depth) on this port. 0: none.',
  );
  const warmUpUrl = r.string(
    'CACHE_WARM_UP_URL',
    `http://127.0.0.1:${port}`,
    "Where the cache warm-up job (once per build, after a deploy) reads the first catalog pages: the service itself. Default: this process's own port on loopback.",
  );
  checkUrl(r, 'CACHE_WARM_UP_URL', warmUpUrl, ['http:', 'https:']);
  const warmUpPages = r.int(
    'CACHE_WARM_UP_PAGES',
    3,
    0,
    100,
    'Catalog pages (100 products each; the first 20 of each also one by one) the warm-up reads. 0: no warm-up.',
  );

  const tracingEnabled = r.bool(
    'TRACING_ENABLED',
    false,
    'false',
    'OpenTelemetry traces: spans for HTTP, database, Redis and jobs, the trace id in every log line, W3C `traceparent` accepted and carried into jobs. Off: no tracing code runs.',
  );
  const otlpEndpoint =
    r.optionalString(
      'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT',
      'OTLP/HTTP endpoint for traces (e.g. `http://127.0.0.1:4318/v1/traces`). Unset: `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`, else no export.',
    ) ??
    (() => {
      const base = r.optionalString(
        'OTEL_EXPORTER_OTLP_ENDPOINT',
        'OTLP/HTTP base endpoint (e.g. `http://127.0.0.1:4318`).',
      );
      return base === undefined ? undefined : `${base.replace(/\/+$/, '')}/v1/traces`;
    })();
  checkUrl(r, 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', otlpEndpoint, ['http:', 'https:']);
  const otelServiceName = r.string('OTEL_SERVICE_NAME', 'shipshape', 'service.name of the spans.');
  const tracingSamplePercent = r.int(
    'TRACING_SAMPLE_PERCENT',
    100,
    0,
    100,
    'Share of new traces recorded (a sampled incoming `traceparent` is always followed).',
  );

  const config: Config = {
    env: nodeEnv,
    server: {
      host,
      port,
      bodyLimitBytes,
      requestTimeoutMs,
      headersTimeoutMs,
      keepAliveTimeoutMs,
      connectionsCheckIntervalMs,
      maxConnections,
      maxRequestsPerSocket,
      trustProxy,
      staticDir: resolve(projectRoot, staticDir),
      docsEnabled: docsEnabled ?? nodeEnv !== 'production',
    },
    log: { level: logLevel, slowRequestMs, pm2: pm2LogTarget(env) },
    database: {
      url: databaseUrl,
      migrationUrl,
      sqlitePath: sqlitePath === ':memory:' ? sqlitePath : resolve(projectRoot, sqlitePath),
      poolMax,
      connectTimeoutMs,
      statementTimeoutMs,
      requestBudgetMs,
      migrateOnStart: migrateOnStart ?? databaseUrl === undefined,
      budget: {
        servers: budgetServers,
        workersPerServer: budgetWorkers === 0 ? availableParallelism() : budgetWorkers,
        reserved: budgetReserved,
        onOverflow: budgetOnOverflow,
      },
      replicas: {
        urls: replicaUrls,
        maxLagBytes: replicaMaxLagBytes,
        maxLagSeconds: replicaMaxLagSeconds,
        checkIntervalMs: replicaCheckIntervalMs,
        waitMs: replicaWaitMs,
      },
      waitSeconds,
    },
    redis: {
      url: redisUrl,
      keyPrefix: redisKeyPrefix,
      commandTimeoutMs: redisCommandTimeoutMs,
      connectTimeoutMs: redisConnectTimeoutMs,
    },
    cors: { origins: corsOrigins },
    rateLimit: {
      max: rateLimitMax,
      windowMs: rateLimitWindowMs,
      localPercent: rateLimitLocalPercent,
      authMax: authRateLimitMax,
      authWindowMs: authRateLimitWindowMs,
    },
    metrics: {
      token: metricsToken,
      previousTokens: metricsPreviousTokens,
      port: metricsPort === 0 ? undefined : metricsPort + appInstance,
      instance: appInstance,
    },
    build: { version: packageVersion(), commit: buildCommit },
    sentry: {
      dsn: sentryDsn,
      environment: sentryEnvironment ?? nodeEnv,
      release: sentryRelease ?? `shipshape@${packageVersion()}+${buildCommit}`,
    },
    auth: {
      jwtSecret: jwtSecretGiven ?? randomBytes(48).toString('base64'),
      jwtSecretGenerated: jwtSecretGiven === undefined,
      jwtPreviousSecrets,
      jwtNextSecrets,
      issuer: jwtIssuer,
      audience: jwtAudience,
      accessTokenTtlSeconds,
      refreshAbsoluteTtlSeconds,
      refreshIdleTtlSeconds,
      refreshReuseIntervalSeconds,
      passwordAlgorithm,
      argon2: { memoryKib: argon2MemoryKib, iterations: argon2Iterations, parallelism: argon2Parallelism },
      bcryptCost,
      loginMaxFailures,
      loginFailureWindowSeconds,
      lockoutBaseSeconds,
      lockoutMaxSeconds: Math.max(lockoutMaxSeconds, lockoutBaseSeconds),
    },
    shutdown: { graceMs: shutdownGraceMs, timeoutMs: shutdownTimeoutMs },
    watchdogMs,
    commerce: { currency },
    cache: {
      enabled: cacheEnabled ?? true,
      maxEntries: cacheMaxEntries,
      localTier: cacheLocalTier ?? true,
      productTtlSeconds: cacheProductTtlSeconds,
      productListTtlSeconds: cacheProductListTtlSeconds,
      userTtlSeconds: cacheUserTtlSeconds,
    },
    idempotency: {
      ttlHours: idempotencyTtlHours,
      lockSeconds: idempotencyLockSeconds,
      cleanupIntervalSeconds: idempotencyCleanupIntervalSeconds,
    },
    mail: { smtpUrl: mailSmtpUrl, from: mailFrom, timeoutMs: mailTimeoutMs },
    accounts: {
      publicBaseUrl: publicBaseUrl.replace(/\/+$/, ''),
      passwordResetTtlSeconds,
      emailVerificationTtlSeconds,
      mailsPerAddress: accountMailsPerAddress,
      mailWindowSeconds: accountMailWindowSeconds,
      verificationRequiredFor: verificationRequiredFor as VerifiedAction[],
    },
    jobs: {
      inProcess: jobsInProcess ?? true,
      concurrency: jobsConcurrency,
      pollIntervalMs: jobsPollIntervalMs,
      leaseSeconds: jobsLeaseSeconds,
      maxAttempts: jobsMaxAttempts,
      backoffBaseMs: jobsBackoffBaseMs,
      retentionHours: jobsRetentionHours,
      sessionCleanupIntervalSeconds,
      warmUpUrl,
      warmUpPages,
      metricsPort: jobsMetricsPort,
    },
    tracing: {
      enabled: tracingEnabled ?? false,
      otlpEndpoint,
      serviceName: otelServiceName,
      samplePercent: tracingSamplePercent,
    },
  };
  return { config, reader: r };
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    for (const item of Object.values(value)) deepFreeze(item);
    Object.freeze(value);
  }
  return value;
}

/** Parses and validates the environment. Throws ConfigError listing every bad variable. */
export function loadConfig(env: Env = process.env): Config {
  const { config, reader } = read(env);
  if (reader.problems.length > 0) throw new ConfigError(reader.problems);
  return deepFreeze(config);
}

/** Every variable the service reads, with its default and meaning. */
export function describeConfig(): readonly VariableDoc[] {
  return read({}).reader.docs;
}

/**
 * The secrets `env` sets directly rather than through `<NAME>_FILE` (a URL counts only when it holds
 * a password): what PM2 would write in plain text into its dump.
 */
export function plainSecretNames(env: Readonly<Record<string, string | undefined>>): string[] {
  return describeConfig()
    .filter((doc) => doc.secret)
    .map((doc) => doc.name)
    .filter((name) => {
      const value = env[name];
      if (value === undefined || value.trim() === '') return false;
      if (!name.endsWith('_URL') && !name.endsWith('_URLS')) return true;
      // Every URL of a list: one with a password makes the value a secret.
      return value.split(',').some((item) => {
        try {
          return new URL(item.trim()).password !== '';
        } catch {
          return false; // loadConfig reports the malformed URL
        }
      });
    });
}
