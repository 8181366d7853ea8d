// PM2 ecosystem for Shipshape: cluster mode on every core, zero-downtime reloads.
//
//   npm run build && npm run pm2:start          (pm2 start deploy/pm2/ecosystem.config.cjs --env production)
//   npm run pm2:reload                          (one worker at a time; none of its requests is lost)
//
// The service reads its own configuration from the environment PM2 was started with (DATABASE_URL,
// REDIS_URL, JWT_SECRET, …; see README). After changing it: `pm2 reload … --update-env`.
//
// Timings that make reloads lossless (docs/decisions/0008-pm2.md):
// - wait_ready: a new worker counts as started only when it sends 'ready' — after it listens and
//   its database answers (src/server.ts) — not when its process merely exists;
// - listen_timeout must exceed the slowest boot (migrations, waiting for the database): past it PM2
//   replaces the old worker anyway;
// - kill_timeout must exceed the drain (SHUTDOWN_TIMEOUT_MS): past it PM2 sends SIGKILL.
const path = require('node:path');

const root = path.resolve(__dirname, '..', '..');
const logDir = process.env.PM2_LOG_DIR || path.join(root, 'logs');
const shutdownTimeoutMs = Number(process.env.SHUTDOWN_TIMEOUT_MS || 10000);
const instances = process.env.PM2_INSTANCES || 'max';

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
      time: true,
      log_date_format: 'YYYY-MM-DD HH:mm:ss.SSS Z',
      env: {
        NODE_ENV: 'development',
      },
      env_production: {
        NODE_ENV: 'production',
        PORT: process.env.PORT || 3000,
        // Each worker serves its own /metrics on METRICS_PORT + its instance number, so Prometheus
        // scrapes every worker and the totals add up (KNOWN-DEFECTS 9).
        METRICS_PORT: process.env.METRICS_PORT || 9464,
      },
    },
  ],
};
