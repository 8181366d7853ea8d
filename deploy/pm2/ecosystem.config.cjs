// PM2 ecosystem for Shipshape: cluster mode on every core, zero-downtime reloads.
//
//   npm run pm2:start     (src/cli/pm2.ts: checks the configuration, then pm2 start … --env production,
//                          then waits until every worker answers /ready)
//   npm run pm2:reload    (the same checks first; one worker at a time; none of its requests is lost)
//
// The service's variables (every name config.ts reads, and the *_FILE variants of secrets) are
// passed from the environment this file is loaded in into env_production. PM2 rebuilds an
// ecosystem app's environment from this file on every start and reload, so this pass-through is what
// makes a reload apply a changed environment. Secrets: give PM2 the *_FILE variants, never the
// values, or `pm2 save` writes them in plain text into its dump (the wrapper refuses them).
//
// Timings that make reloads lossless (docs/decisions/0008-pm2-cluster.md, 0015-pm2-wrapper.md):
// - wait_ready: a new worker counts as started only when it sends 'ready' — after it listens and
//   its database answers (src/server.ts) — not when its process merely exists;
// - listen_timeout must exceed the slowest boot (migrations, waiting for the database): past it PM2
//   replaces the old worker anyway;
// - kill_timeout must exceed the drain (SHUTDOWN_TIMEOUT_MS): past it PM2 sends SIGKILL.
const path = require('node:path');
const { execFileSync } = require('node:child_process');

// SHIPSHAPE_APP_DIR: the release layout's `current` symlink (set by scripts/release-agent.sh), so PM2
// keeps the unresolved path and every reload starts whatever release `current` names at that moment.
const root = process.env.SHIPSHAPE_APP_DIR || path.resolve(__dirname, '..', '..');

/** The names of the service's variables, from the built config.ts (the one list there is). */
function serviceVariableNames() {
  const names = (docs) => docs.flatMap((d) => (d.secret ? [d.name, `${d.name}_FILE`] : [d.name]));
  try {
    // Node 20.19+ and 22.12+ require() an ES module; older ones need a child process.
    return names(require(path.join(root, 'dist', 'config.js')).describeConfig());
  } catch (err) {
    if (err.code !== 'ERR_REQUIRE_ESM' && err.code !== 'MODULE_NOT_FOUND') throw err;
  }
  const script =
    "import('./dist/config.js').then((m) => process.stdout.write(JSON.stringify(m.describeConfig().flatMap((d) => d.secret ? [d.name, d.name + '_FILE'] : [d.name]))))";
  try {
    return JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: root }));
  } catch (err) {
    throw new Error(`cannot read the service's variables from dist/config.js (run npm run build): ${err}`);
  }
}

// Set by PM2 per worker, or by this file below: never passed through.
const notPassed = new Set(['NODE_APP_INSTANCE', 'NODE_ENV', 'PORT', 'METRICS_PORT']);
const passed = {};
for (const name of serviceVariableNames()) {
  if (!notPassed.has(name) && process.env[name] !== undefined) passed[name] = process.env[name];
}
const logDir = process.env.PM2_LOG_DIR || path.join(root, 'logs');
const shutdownTimeoutMs = Number(process.env.SHUTDOWN_TIMEOUT_MS || 10000);
const instances = process.env.PM2_INSTANCES || 'max';
// PM2_JOBS_WORKER=true: the job workers run as an app of their own (`shipshape-worker`, `npm run
// worker`) and the API workers stop running jobs; otherwise every API worker also runs jobs, which
// the queue allows (decision 0062).
const jobsWorker = ['1', 'true', 'yes', 'on'].includes(
  String(process.env.PM2_JOBS_WORKER || '').toLowerCase(),
);

module.exports = {
  apps: [
    {
      name: process.env.PM2_APP_NAME || 'shipshape',
      cwd: root,
      script: 'dist/main.js',
      exec_mode: 'cluster',
      // PM2_INSTANCES: a number, or 'max' (default) for one worker per core.
      instances: instances === 'max' ? 'max' : Number(instances),
      wait_ready: true,
      listen_timeout: Number(process.env.PM2_LISTEN_TIMEOUT_MS || 30000),
      kill_timeout: shutdownTimeoutMs + 3000,
      max_memory_restart: process.env.PM2_MAX_MEMORY || '1G',
      autorestart: true,
      // A worker that keeps crashing at boot is restarted ever more slowly instead of in a tight loop.
      exp_backoff_restart_delay: 100,
      // Logs as the guide lists them, timestamped by PM2; each line's body is the service's JSON.
      error_file: path.join(logDir, 'err.log'),
      out_file: path.join(logDir, 'out.log'),
      log_file: path.join(logDir, 'combined.log'),
      merge_logs: true,
      // Not `time: true`: PM2 then replaces this format with its own second-precision one.
      log_date_format: 'YYYY-MM-DD HH:mm:ss.SSS Z',
      env: {
        NODE_ENV: 'development',
      },
      env_production: {
        ...passed,
        NODE_ENV: 'production',
        PORT: process.env.PORT || 3000,
        // Each worker serves its own /metrics on METRICS_PORT + its instance number, so Prometheus
        // scrapes every worker and the totals add up (guide correction 9).
        METRICS_PORT: process.env.METRICS_PORT || 9464,
        ...(jobsWorker ? { JOBS_IN_PROCESS: 'false' } : {}),
      },
    },
    ...(jobsWorker
      ? [
          {
            name: `${process.env.PM2_APP_NAME || 'shipshape'}-worker`,
            cwd: root,
            script: 'dist/worker.js',
            exec_mode: 'fork',
            instances: 1,
            wait_ready: true,
            listen_timeout: Number(process.env.PM2_LISTEN_TIMEOUT_MS || 30000),
            // The worker lets the jobs in hand finish (up to SHUTDOWN_TIMEOUT_MS) before it exits.
            kill_timeout: shutdownTimeoutMs + 3000,
            max_memory_restart: process.env.PM2_MAX_MEMORY || '1G',
            autorestart: true,
            exp_backoff_restart_delay: 100,
            error_file: path.join(logDir, 'worker-err.log'),
            out_file: path.join(logDir, 'worker-out.log'),
            merge_logs: true,
            log_date_format: 'YYYY-MM-DD HH:mm:ss.SSS Z',
            env: { NODE_ENV: 'development' },
            env_production: {
              ...passed,
              NODE_ENV: 'production',
              JOBS_IN_PROCESS: 'false',
              JOBS_METRICS_PORT: process.env.JOBS_METRICS_PORT || 0,
            },
          },
        ]
      : []),
  ],
};
