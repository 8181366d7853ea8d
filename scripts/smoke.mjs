#!/usr/bin/env node
// Starts the compiled service as production would, checks what a fresh install must serve, then
// stops it with SIGTERM and expects exit code 0. Used by CI for `npm start` on SQLite and for
// Node 24 on PostgreSQL and Redis.
//
//   node scripts/smoke.mjs [--node <binary>] [--npm-start]    (environment configures the service)
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';

const args = process.argv.slice(2);
const nodeIndex = args.indexOf('--node');
const nodeBinary = nodeIndex >= 0 ? args[nodeIndex + 1] : process.execPath;
const viaNpm = args.includes('--npm-start');
const port = process.env.PORT ?? '3917';
const base = `http://127.0.0.1:${port}`;

const [command, commandArgs] = viaNpm ? ['npm', ['start', '--silent']] : [nodeBinary, ['dist/main.js']];
const child = spawn(command, commandArgs, {
  env: { ...process.env, PORT: port, HOST: '127.0.0.1' },
  stdio: ['ignore', 'pipe', 'inherit'],
  detached: viaNpm,
});
let output = '';
child.stdout.on('data', (chunk) => {
  output += chunk;
});

function fail(message) {
  console.error(`smoke: FAILED: ${message}\n--- service output ---\n${output}`);
  try {
    process.kill(viaNpm ? -child.pid : child.pid, 'SIGKILL');
  } catch {}
  process.exit(1);
}

const deadline = Date.now() + 120_000;
for (;;) {
  if (child.exitCode !== null) fail(`exited early with ${child.exitCode}`);
  try {
    const res = await fetch(`${base}/ready`);
    if (res.status === 200) break;
  } catch {}
  if (Date.now() > deadline) fail('not ready within 120 s');
  await sleep(250);
}

const expectations = [
  ['/health', 200, (body) => JSON.parse(body).status === 'healthy'],
  ['/ready', 200, (body) => JSON.parse(body).status === 'ready'],
  ['/metrics', 200, (body) => body.includes('http_requests_total')],
  ['/docs', 200, (body) => body.includes('<html')],
  ['/docs/openapi.json', 200, (body) => JSON.parse(body).openapi.startsWith('3.')],
  ['/no-such-route', 404, (body) => JSON.parse(body).code === 'NOT_FOUND'],
];
for (const [path, status, check] of expectations) {
  const res = await fetch(
    `${base}${path}`,
    path === '/metrics' && process.env.METRICS_TOKEN
      ? { headers: { authorization: `Bearer ${process.env.METRICS_TOKEN}` } }
      : {},
  );
  const body = await res.text();
  if (res.status !== status || !check(body)) fail(`${path}: ${res.status} ${body.slice(0, 200)}`);
}
const ready = JSON.parse(await (await fetch(`${base}/ready`)).text());

// npm start wraps node in npm: signal the whole process group, as a terminal's Ctrl-C would.
// npm itself then dies of the signal; what matters is that the service drained and closed.
process.kill(viaNpm ? -child.pid : child.pid, 'SIGTERM');
const [code, signal] = await once(child, 'exit');
if (viaNpm) {
  for (let i = 0; i < 100 && !output.includes('"shutdown complete"'); i++) await sleep(100);
  if (!output.includes('"shutdown complete"'))
    fail(`no clean shutdown after SIGTERM (npm: ${code ?? signal})`);
} else if (code !== 0) {
  fail(`exit code ${code ?? signal} after SIGTERM`);
}
const version = viaNpm
  ? 'npm start'
  : await new Promise((resolve) => {
      const v = spawn(nodeBinary, ['--version']);
      let text = '';
      v.stdout.on('data', (c) => {
        text += c;
      });
      v.on('exit', () => resolve(text.trim()));
    });
console.log(`smoke: ok (${version}; checks ${JSON.stringify(ready.checks)}; SIGTERM → clean shutdown)`);
