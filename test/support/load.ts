import { Agent, request } from 'node:http';

/**
 * A closed-loop load generator for tests: `connections` virtual clients, each with its own
 * keep-alive connection, sending requests back to back until stopped. Every outcome is recorded,
 * so a test can assert that nothing failed — not a socket error, not a 5xx.
 */

export interface LoadRequest {
  readonly method: 'GET' | 'POST' | 'PATCH' | 'DELETE';
  readonly path: string;
  readonly headers?: Record<string, string>;
  readonly body?: unknown;
}

export interface LoadResponse {
  readonly status: number;
  readonly body: string;
  readonly headers: Record<string, string | string[] | undefined>;
}

export interface Failure {
  readonly at: number;
  readonly request: string;
  readonly error: string;
}

export interface LoadResult {
  readonly sent: number;
  readonly answered: number;
  readonly failures: readonly Failure[];
  readonly statuses: Readonly<Record<number, number>>;
  readonly durationMs: number;
}

export function send(port: number, req: LoadRequest, agent: Agent | false = false): Promise<LoadResponse> {
  const payload = req.body === undefined ? undefined : JSON.stringify(req.body);
  return new Promise((resolve, reject) => {
    const outgoing = request(
      {
        host: '127.0.0.1',
        port,
        method: req.method,
        path: req.path,
        agent,
        headers: {
          ...(payload === undefined
            ? {}
            : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }),
          ...req.headers,
        },
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk) => {
          body += chunk;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
        res.on('error', reject);
      },
    );
    outgoing.setTimeout(30_000, () => outgoing.destroy(new Error('timeout')));
    outgoing.on('error', reject);
    outgoing.end(payload);
  });
}

export interface RunningLoad {
  stop(): Promise<LoadResult>;
  /** Requests answered so far. */
  answered(): number;
}

/**
 * `next(client)` picks each client's next request; `onResponse` sees every answer (to record ids of
 * created resources, for example).
 */
export function startLoad(options: {
  port: number;
  connections: number;
  next: (client: number, iteration: number) => LoadRequest;
  onResponse?: (req: LoadRequest, res: LoadResponse) => void;
}): RunningLoad {
  let stopping = false;
  let sent = 0;
  let answered = 0;
  const failures: Failure[] = [];
  const statuses: Record<number, number> = {};
  const started = Date.now();

  const client = async (id: number) => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    for (let i = 0; !stopping; i++) {
      const req = options.next(id, i);
      sent++;
      try {
        const res = await send(options.port, req, agent);
        answered++;
        statuses[res.status] = (statuses[res.status] ?? 0) + 1;
        if (res.status >= 500)
          failures.push({
            at: Date.now() - started,
            request: `${req.method} ${req.path}`,
            error: `HTTP ${res.status} ${res.body.slice(0, 200)}`,
          });
        options.onResponse?.(req, res);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
        failures.push({ at: Date.now() - started, request: `${req.method} ${req.path}`, error: code });
      }
    }
    agent.destroy();
  };
  const clients = Array.from({ length: options.connections }, (_, i) => client(i));
  return {
    answered: () => answered,
    async stop() {
      stopping = true;
      await Promise.all(clients);
      return { sent, answered, failures, statuses, durationMs: Date.now() - started };
    },
  };
}
