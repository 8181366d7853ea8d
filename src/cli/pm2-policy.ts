import { readFileSync } from 'node:fs';

/**
 * How PM2's daemon — the cluster's primary — gives connections to the workers (decision 0095). With
 * Node's default on Linux (round-robin), the primary accepts every connection and passes it to a
 * worker over IPC, keeping its own copy open until the worker acknowledges it. A worker killed before
 * it acknowledges never does, and Node (20.20 and later) neither closes nor re-sends that copy: the
 * connection stays open in the primary for ever and its request is never answered (chaos scenario
 * "app worker kill -9"; test/pm2/cluster.test.ts). With `none` the workers accept from the listening
 * socket themselves: a dead worker's own connections are reset, those it had not accepted yet wait
 * in the kernel's queue for the others, and nothing sits in the primary. The daemon fixes its policy
 * when it starts, so `npm run pm2:start|reload` (src/cli/pm2.ts) sets it for a daemon it launches
 * and reports a running daemon that lacks it. An explicit value is the operator's choice, kept.
 */
export const clusterPolicyVariable = 'NODE_CLUSTER_SCHED_POLICY';

/** The scheduling policy of the PM2 daemon named by its pid file: undefined when none is running. */
export function daemonClusterPolicy(pidFile: string): 'none' | 'rr' | undefined {
  let environ: string;
  try {
    const pid = Number(readFileSync(pidFile, 'utf8').trim());
    if (!Number.isInteger(pid) || pid <= 0) return undefined;
    environ = readFileSync(`/proc/${pid}/environ`, 'utf8');
  } catch {
    return undefined;
  }
  const entry = environ.split('\0').find((e) => e.startsWith(`${clusterPolicyVariable}=`));
  return entry === `${clusterPolicyVariable}=none` ? 'none' : 'rr';
}

/** Sets the policy for a daemon launched from now on; reports a running daemon without it. */
export function applyClusterPolicy(command: 'start' | 'reload', pidFile: string): void {
  const chosen = process.env[clusterPolicyVariable];
  if (chosen === undefined) process.env[clusterPolicyVariable] = 'none';
  else if (chosen !== 'none')
    process.stderr.write(
      `pm2 ${command}: ${clusterPolicyVariable}=${chosen} as set: a connection PM2 hands to a worker that crashes may never be answered (decision 0095)\n`,
    );
  if (chosen === undefined && daemonClusterPolicy(pidFile) === 'rr')
    process.stderr.write(
      `pm2 ${command}: warning: the running PM2 daemon hands out connections round-robin (started without ${clusterPolicyVariable}=none): a connection handed to a worker that crashes is never answered. Restart the daemon with it (${clusterPolicyVariable}=none pm2 update; the workers restart) — decision 0095\n`,
    );
}
