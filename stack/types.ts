/**
 * The stack's shared vocabulary. A stage is an ordered list of components; `up` starts them in
 * order and `down` stops them in reverse. Components talk to each other only through the context:
 * what they publish (databases, redis, servers, entry) and the environment they add for the app
 * servers (`appEnv`). That is the extension point: a later stage adds components (a replica,
 * PgBouncer, Prometheus, an autoscaler, per-server sshd) without rewriting the earlier ones.
 */

export type StageName = 'prototype' | 'mvp' | 'growth' | 'scale';

export interface DatabaseStatus {
  readonly role: 'primary' | 'replica' | 'pgbouncer';
  /** Never with a password: the stack's own clusters are reached over their 0700 sockets. */
  readonly url: string;
  /** Replicas (scale stage), read at status time: streaming state and lag (ReplicaHealth). */
  readonly replication?: unknown;
}

export interface ServerStatus {
  readonly name: string;
  /** 'primary' takes traffic; 'backup' only while every primary is down (nginx `backup`). */
  readonly role: 'primary' | 'backup';
  readonly weight: number;
  /** The server's own HTTP address (behind nginx in the growth stage). */
  readonly url: string;
  /** One /metrics URL per PM2 worker (METRICS_PORT + instance). */
  readonly metricsUrls: readonly string[];
  /** Live process ids of its workers (read at status time). */
  readonly pids: readonly number[];
  /** Live workers now (with --autoscale this changes; `instances` in state.json is the start count). */
  readonly workers: number;
  /** With --autoscale: its monitor's last decision (src/scaling/autoscaler.ts DecisionRecord); else null. */
  readonly autoscale: unknown;
}

/** What `npm run stack -- status --json` prints (documented in README "npm run stack"). */
export interface StackStatus {
  readonly stage: StageName;
  /** True when every process the stack started is alive. */
  readonly running: boolean;
  readonly stateDir: string;
  readonly startedAt: string;
  /** Growth and later: `{ https, http }` of nginx; below growth: the one app URL. */
  readonly entry: { readonly https: string; readonly http: string } | string;
  /** The CA that signed the edge certificate (trust only this), or null without TLS. */
  readonly caFile: string | null;
  readonly servers: readonly ServerStatus[];
  readonly databases: readonly DatabaseStatus[];
  readonly redis: { readonly url: string } | null;
  readonly nginx: {
    readonly pid: number | null;
    readonly config: string;
    readonly accessLog: string;
    readonly errorLog: string;
  } | null;
  /** Each component's own public details, by component name (for the extensions' consumers). */
  readonly components: Readonly<Record<string, unknown>>;
}

export interface StackOptions {
  readonly stateDir: string;
  /** PM2 workers per app server (default: 2 for mvp, 1 for growth). */
  readonly instances?: number;
  /** Given ports for the entry (else free ones): the app (below growth) or nginx. */
  readonly port?: number;
  readonly httpPort?: number;
  readonly httpsPort?: number;
  /** A PostgreSQL role that may CREATE DATABASE (the throwaway databases live there). */
  readonly postgresAdminUrl?: string;
  /** nginx server_name and the local certificate's first name. */
  readonly serverName?: string;
  /** Static files for nginx and the app (default: the project's public/). */
  readonly publicDir?: string;
  /** Extra environment for every app server (e.g. LOG_LEVEL, RATE_LIMIT_MAX). */
  readonly appEnv?: Readonly<Record<string, string>>;
  /** Also run Prometheus, Alertmanager, the webhook receiver and the exporters (growth). */
  readonly monitoring?: boolean;
  /** Growth: app servers as SSH deploy targets, empty until scripts/deploy.sh --env local. */
  readonly deployTargets?: boolean;
  /** `--autoscale`: an `npm run autoscale` monitor per PM2 server (stack/components/autoscaler.ts). */
  readonly autoscale?: { readonly min: number; readonly max: number; readonly extraArgs: readonly string[] };
  readonly log?: (line: string) => void;
}

/** Mutable record of a running stack, saved as state.json in the state directory. */
export interface StackState {
  stage: StageName;
  stateDir: string;
  /** The project checkout whose dist/ and deploy/ the stack runs. */
  root: string;
  startedAt: string;
  entry: StackStatus['entry'] | null;
  caFile: string | null;
  databases: DatabaseStatus[];
  redis: { url: string } | null;
  servers: ServerRecord[];
  nginx: NginxRecord | null;
  /** Component name → its private record (pids, directories) for `down`. */
  components: Record<string, unknown>;
  /** Component names in the order they came up. */
  started: string[];
}

export interface ServerRecord {
  name: string;
  role: 'primary' | 'backup';
  weight: number;
  host: string;
  port: number;
  metricsPort: number;
  instances: number;
  /** The server's PM2_HOME (PM2 clusters) or null (a single process). */
  pm2Home: string | null;
  /** For a single process: its pid. */
  pid: number | null;
  /** Environment the server was started with (state.json is private: mode 0600). */
  env: Record<string, string>;
  /** A deploy target's release layout (--deploy-targets): it serves once a release is deployed. */
  deployDir?: string;
}

export interface NginxRecord {
  /** Per-client API rate at the edge (requests/s), when not the production default. */
  apiRate?: number;
  confDir: string;
  config: string;
  pidFile: string;
  accessLog: string;
  errorLog: string;
  httpPort: number;
  httpsPort: number;
  /** The loopback stub_status listener (prometheus-nginx-exporter reads /stub_status there). */
  statusPort: number;
  serverName: string;
  publicDir: string;
  certificate: string;
  certificateKey: string;
}

export interface StackContext {
  readonly stage: StageName;
  readonly root: string;
  readonly options: StackOptions;
  readonly state: StackState;
  /** Environment every app server gets; components earlier in the stage add to it. */
  readonly appEnv: Record<string, string>;
  log(line: string): void;
  /** Saves state.json (call after each thing started, so `down` can always clean up). */
  save(): void;
}

export interface Component {
  readonly name: string;
  /** An optional component (a flag of `up`): left out of the stage when this says false. */
  enabled?(options: StackOptions): boolean;
  up(ctx: StackContext): Promise<void>;
  /** Stops and removes what `up` made, from the saved state; must not throw for what is gone. */
  down(state: StackState, log: (line: string) => void): Promise<void>;
  /** Extra public details for `status.components[name]`. */
  status?(state: StackState): unknown;
}
