import { copyFileSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, stringify } from 'yaml';

/**
 * Renders the shipped monitoring configuration (deploy/prometheus, deploy/alertmanager) into a
 * directory for a running Prometheus and Alertmanager: the same files production uses, with only
 * what differs per installation replaced — the target lists (file-based discovery), the webhook
 * receiver's URL and, for the local stack and its tests, shorter timings.
 */

const deployDir = fileURLToPath(new URL('../../deploy/', import.meta.url));
export const prometheusDir = join(deployDir, 'prometheus');
export const alertmanagerDir = join(deployDir, 'alertmanager');

/** The scrape jobs of deploy/prometheus/prometheus.yml, each read from targets/<job>.json. */
export const scrapeJobs = [
  'shipshape',
  'node',
  'postgres',
  'redis',
  'nginx',
  'blackbox',
  'prometheus',
  'alertmanager',
  'autoscaler',
] as const;
export type ScrapeJob = (typeof scrapeJobs)[number];

/** A file_sd target group: addresses plus labels (`__param_*` labels become probe parameters). */
export interface TargetGroup {
  readonly targets: readonly string[];
  readonly labels?: Readonly<Record<string, string>>;
}

export interface PrometheusRenderOptions {
  /** Target groups per job; a job left out gets an empty list (scraped as nothing). */
  readonly targets: Partial<Record<ScrapeJob, readonly TargetGroup[]>>;
  /** Overrides global scrape_interval and evaluation_interval (e.g. '1s' for a live test). */
  readonly interval?: string;
  /** Overrides the `for` of named alerts (a live test cannot wait minutes); the rest is unchanged. */
  readonly alertFor?: Readonly<Record<string, string>>;
}

type Rule = { alert?: string; record?: string; for?: string };
type RuleFile = { groups: Array<{ name: string; rules: Rule[] }> };

/** Writes prometheus.yml, rules/ and targets/ into `dir`; returns the path of prometheus.yml. */
export function renderPrometheus(dir: string, options: PrometheusRenderOptions): string {
  mkdirSync(join(dir, 'rules'), { recursive: true });
  mkdirSync(join(dir, 'targets'), { recursive: true });
  const config = parse(readFileSync(join(prometheusDir, 'prometheus.yml'), 'utf8')) as {
    global: Record<string, string>;
  };
  if (options.interval !== undefined) {
    config.global.scrape_interval = options.interval;
    config.global.evaluation_interval = options.interval;
    config.global.scrape_timeout = options.interval;
  }
  writeFileSync(join(dir, 'prometheus.yml'), stringify(config));

  const overrides = new Map(Object.entries(options.alertFor ?? {}));
  for (const file of readdirSync(join(prometheusDir, 'rules'))) {
    const rules = parse(readFileSync(join(prometheusDir, 'rules', file), 'utf8')) as RuleFile;
    for (const rule of rules.groups.flatMap((group) => group.rules)) {
      const duration = rule.alert === undefined ? undefined : overrides.get(rule.alert);
      if (duration !== undefined) {
        rule.for = duration;
        overrides.delete(rule.alert as string);
      }
    }
    writeFileSync(join(dir, 'rules', file), stringify(rules));
  }
  if (overrides.size > 0) throw new Error(`no such alert: ${[...overrides.keys()].join(', ')}`);

  for (const job of scrapeJobs) writeTargets(dir, job, options.targets[job] ?? []);
  return join(dir, 'prometheus.yml');
}

/** Replaces one job's targets (Prometheus notices the change by itself). */
export function writeTargets(dir: string, job: ScrapeJob, groups: readonly TargetGroup[]): void {
  // Written whole and renamed into place would be safer for huge files; these are tiny, and
  // Prometheus keeps the previous list when a read fails to parse.
  writeFileSync(join(dir, 'targets', `${job}.json`), `${JSON.stringify(groups, null, 2)}\n`);
}

export interface AlertmanagerRenderOptions {
  /** Base URL of the webhook receiver; each receiver posts to <base>/alerts/<receiver>. */
  readonly webhookUrl: string;
  /** Shorter grouping timings (seconds instead of minutes), for the local stack and its tests. */
  readonly fast?: boolean;
}

type Route = {
  group_wait?: string;
  group_interval?: string;
  repeat_interval?: string;
  routes?: Route[];
};

/** Writes alertmanager.yml into `dir`; returns its path. */
export function renderAlertmanager(dir: string, options: AlertmanagerRenderOptions): string {
  mkdirSync(dir, { recursive: true });
  const config = parse(readFileSync(join(alertmanagerDir, 'alertmanager.yml'), 'utf8')) as {
    route: Route;
    receivers: Array<{ name: string; webhook_configs?: Array<{ url: string }> }>;
  };
  const base = options.webhookUrl.replace(/\/$/, '');
  for (const receiver of config.receivers) {
    for (const webhook of receiver.webhook_configs ?? []) webhook.url = `${base}/alerts/${receiver.name}`;
  }
  if (options.fast === true) {
    const shorten = (route: Route) => {
      if (route.group_wait !== undefined) route.group_wait = '1s';
      if (route.group_interval !== undefined) route.group_interval = '2s';
      if (route.repeat_interval !== undefined) route.repeat_interval = '1m';
      route.routes?.forEach(shorten);
    };
    shorten(config.route);
  }
  const path = join(dir, 'alertmanager.yml');
  writeFileSync(path, stringify(config));
  return path;
}

/**
 * Writes blackbox.yml (the exporter's modules) into `dir`; returns its path. `caFile` makes the
 * HTTPS probe trust that CA (a local stack's; production trusts the system store).
 */
export function renderBlackbox(dir: string, options: { caFile?: string | null } = {}): string {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, 'blackbox.yml');
  if (options.caFile === undefined || options.caFile === null) {
    copyFileSync(join(prometheusDir, 'blackbox.yml'), path);
    return path;
  }
  const config = parse(readFileSync(join(prometheusDir, 'blackbox.yml'), 'utf8')) as {
    modules: Record<string, { http?: { tls_config?: Record<string, string> } }>;
  };
  const https = config.modules.https_health?.http;
  if (https === undefined) throw new Error('blackbox.yml has no https_health module');
  https.tls_config = { ...https.tls_config, ca_file: options.caFile };
  writeFileSync(path, stringify(config));
  return path;
}

/** The postgres-exporter queries file (replica lag), to pass as --extend.query-path. */
export const postgresExporterQueries = join(prometheusDir, 'postgres-exporter-queries.yaml');
