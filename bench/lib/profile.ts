import { readFileSync } from 'node:fs';

/**
 * A V8 CPU profile (.cpuprofile) as a per-request budget: each sample's time goes to the part of its
 * innermost frame that belongs to one — walking from the leaf towards the root past frames of no
 * part (V8 builtins, Node's fs and timers…) — so JSON.stringify inside pino counts as the log line,
 * Node's header validation as headers, and the socket write of a reply sent from the cache hook as
 * Node's HTTP, not as the cache. Socket work is the exception: Node's stream and socket frames
 * under a database or Redis client (pg's writev of each query) are that client's round trip, not
 * the HTTP server's, so they count as the client's part. Idle time is left out; divided by the
 * requests in the window.
 */
const socketIo = 'Node HTTP parsing and socket I/O';
const database = 'database (pg, kysely, SQLite)';
const redisClient = 'Redis client';

const parts: ReadonlyArray<readonly [string, (url: string, fn: string) => boolean]> = [
  [
    'log line',
    (u) =>
      /\/(pino|sonic-boom|pino-std-serializers|fast-redact)\/|dist\/infra\/(logger|log-file|pm2-log|http\/request-log)\.js/.test(
        u,
      ),
  ],
  ['metrics', (u) => /\/prom-client\/|dist\/infra\/(metrics|runtime-metrics|database-metrics)\.js/.test(u)],
  ['CORS', (u) => /dist\/infra\/http\/cors\.js/.test(u)],
  ['rate limit', (u) => /dist\/infra\/rate-limit\//.test(u)],
  [
    'headers',
    (u, fn) =>
      /dist\/infra\/http\/(security-headers|request-id)\.js/.test(u) ||
      (/fastify\/lib\/reply\.js/.test(u) && /^header/.test(fn)) ||
      (/node:_http_(outgoing|server|common)/.test(u) &&
        /(Header|writeHead|_storeHeader|checkInvalidHeaderChar|checkIsHttpToken)/.test(fn)),
  ],
  ['cache', (u) => /dist\/infra\/cache\/|dist\/modules\/products\/products\.cache/.test(u)],
  ['auth', (u) => /dist\/modules\/auth\//.test(u)],
  [
    database,
    (u) =>
      /\/(pg|pg-protocol|pg-pool|kysely|better-sqlite3)\/|dist\/db\/|dist\/infra\/(database|database-deadline|replicas|read-your-writes)\.js/.test(
        u,
      ),
  ],
  [redisClient, (u) => /\/ioredis\/|dist\/infra\/redis\.js/.test(u)],
  ['route handler and serialisation', (u) => /dist\/modules\/|fast-json-stringify|dist\/lib\//.test(u)],
  [
    'Fastify (routing, hooks, reply)',
    (u) =>
      /\/(fastify|find-my-way|avvio|light-my-request|@fastify)\//.test(u) ||
      /dist\/(app|infra\/http|infra\/lifecycle)/.test(u),
  ],
  [
    socketIo,
    (u) =>
      /^node:(_http|net|internal\/(stream|http|net))/.test(u) || /^node:(stream|internal\/streams)/.test(u),
  ],
  ['garbage collection', (_u, fn) => fn === '(garbage collector)'],
];

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string };
  children?: number[];
}

export interface Budget {
  readonly requests: number;
  readonly windowMs: number;
  readonly busyMs: number;
  readonly rows: ReadonlyArray<{ part: string; us: number; share: number }>;
}

export function profileBudget(path: string, requests: number): Budget {
  const profile = JSON.parse(readFileSync(path, 'utf8')) as {
    nodes: ProfileNode[];
    samples: number[];
    timeDeltas: number[];
    startTime: number;
    endTime: number;
  };
  const parent = new Map<number, number>();
  const byId = new Map<number, ProfileNode>();
  for (const node of profile.nodes) {
    byId.set(node.id, node);
    for (const child of node.children ?? []) parent.set(child, node.id);
  }
  const partOf = new Map<number, string | null>();
  const classify = (id: number): string | null => {
    const known = partOf.get(id);
    if (known !== undefined) return known;
    const names: Array<[string, string]> = [];
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const frame = byId.get(at)?.callFrame;
      if (frame !== undefined) names.push([frame.url, frame.functionName]);
    }
    const leaf = names[0]?.[1] ?? '';
    let part: string | null = 'other (V8, native, Node internals)';
    if (leaf === '(idle)') part = null;
    else {
      // The part of each frame, leaf first: the innermost frame with one decides.
      const framesParts = names.map(([u, fn]) => parts.find(([, test]) => test(u, fn))?.[0]);
      const found = framesParts.findIndex((p) => p !== undefined);
      part = framesParts[found] ?? part;
      // Whose socket: a client's round trip further out claims it.
      if (part === socketIo)
        part = framesParts.slice(found + 1).find((p) => p === database || p === redisClient) ?? part;
    }
    partOf.set(id, part);
    return part;
  };
  const micros = new Map<string, number>();
  let busy = 0;
  for (const [i, id] of profile.samples.entries()) {
    const dt = profile.timeDeltas[i + 1] ?? 0;
    const part = classify(id);
    if (part === null) continue;
    busy += dt;
    micros.set(part, (micros.get(part) ?? 0) + dt);
  }
  const rows = [...micros.entries()]
    .map(([part, us]) => ({ part, us: us / requests, share: us / busy }))
    .sort((a, b) => b.us - a.us);
  return { requests, windowMs: (profile.endTime - profile.startTime) / 1000, busyMs: busy / 1000, rows };
}

/**
 * The budget as a table. The profiler samples by wall clock, so on a busy machine a sample also
 * lands while the thread waits for the core: the shares come from the profile, the µs from the
 * server's CPU per request measured in /proc over the same window (`cpuUs`).
 */
export function budgetTable(budget: Budget, cpuUs: number): string {
  return [
    '| Part | share of samples | µs per request (share × CPU from /proc) |',
    '|---|---:|---:|',
    ...budget.rows.map(
      (r) => `| ${r.part} | ${(r.share * 100).toFixed(0)}% | ${(r.share * cpuUs).toFixed(1)} |`,
    ),
    `| **total** | 100% | **${cpuUs.toFixed(1)}** |`,
  ].join('\n');
}
