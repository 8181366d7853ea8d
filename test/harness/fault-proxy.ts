import { randomInt } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server, type Socket, connect as tcpConnect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * A TCP fault proxy for tests, in Node: the app talks to `proxy.port`, the proxy to the real
 * dependency, and a test injects Toxiproxy's faults in between while load runs (decision 0075).
 *
 * Toxics act on one direction — `downstream` (dependency → app, Toxiproxy's default) or `upstream`
 * (app → dependency) — and apply to connections already open as well as new ones:
 *
 * - `latency`: every chunk is held `latencyMs` ± `jitterMs` after it arrived (order kept);
 * - `bandwidth`: at most `rateKBps` KiB per second;
 * - `slicer`: chunks cut into slices of `averageSize` ± `sizeVariation` bytes, `delayUs` apart;
 * - `limit_data`: the connection is closed once `bytes` have passed;
 * - `timeout`: nothing passes (data is dropped); with `timeoutMs` > 0 the connection is closed that
 *   long after the toxic met it, with 0 it stays open and silent — a hung peer;
 * - `reset_peer`: the connection is reset (TCP RST) `timeoutMs` after the toxic met it.
 *
 * `down()` is Toxiproxy's disabled proxy: open connections are closed and new ones refused (the
 * listener is closed, so a connect gets ECONNREFUSED); `up()` listens on the same port again.
 */

export type Direction = 'upstream' | 'downstream';

export type ToxicSpec =
  | { readonly type: 'latency'; readonly latencyMs: number; readonly jitterMs?: number }
  | { readonly type: 'bandwidth'; readonly rateKBps: number }
  | {
      readonly type: 'slicer';
      readonly averageSize: number;
      readonly sizeVariation?: number;
      readonly delayUs?: number;
    }
  | { readonly type: 'limit_data'; readonly bytes: number }
  | { readonly type: 'timeout'; readonly timeoutMs?: number }
  | { readonly type: 'reset_peer'; readonly timeoutMs?: number };

export interface Toxic {
  readonly id: number;
  readonly direction: Direction;
  readonly spec: ToxicSpec;
}

export interface FaultProxyStats {
  /** Connections accepted since start. */
  readonly accepted: number;
  /** Connections open now. */
  readonly open: number;
  /** Bytes forwarded each way. */
  readonly bytes: Readonly<Record<Direction, number>>;
  /** Connections the proxy reset or closed because of a toxic (or down()). */
  readonly cut: number;
}

export interface FaultProxy {
  readonly name: string;
  readonly port: number;
  /** `host:port` of the proxy, for URLs. */
  readonly address: string;
  readonly target: { readonly host: string; readonly port: number };
  readonly isDown: boolean;
  add(spec: ToxicSpec, direction?: Direction): Toxic;
  remove(toxic: Toxic): void;
  /** Removes every toxic. */
  clear(): void;
  toxics(): readonly Toxic[];
  down(): Promise<void>;
  up(): Promise<void>;
  /** Closes every open connection without refusing new ones (a dependency restart as seen by its clients). */
  cutAll(): void;
  /** Points the proxy at another target (a promoted replica, a restarted server on a new port). */
  retarget(target: { host?: string; port: number }): void;
  stats(): FaultProxyStats;
  close(): Promise<void>;
}

interface Link {
  readonly client: Socket;
  readonly server: Socket;
  /** Called when the toxic list changes, so timers of timeout/reset_peer start for open links. */
  readonly onToxics: () => void;
  readonly destroy: (reset: boolean) => void;
}

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

export async function startFaultProxy(options: {
  name: string;
  target: { host?: string; port: number };
  /** Listen address (default 127.0.0.1) and port (default: a free one). */
  host?: string;
  port?: number;
}): Promise<FaultProxy> {
  const host = options.host ?? '127.0.0.1';
  let target = { host: options.target.host ?? '127.0.0.1', port: options.target.port };
  let toxics: Toxic[] = [];
  let nextId = 1;
  let down = false;
  let closed = false;
  const links = new Set<Link>();
  let accepted = 0;
  let cut = 0;
  const bytes: Record<Direction, number> = { upstream: 0, downstream: 0 };

  const toxicsFor = (direction: Direction) => toxics.filter((t) => t.direction === direction);

  const handle = (client: Socket) => {
    accepted++;
    client.setNoDelay(true);
    const server = tcpConnect({ host: target.host, port: target.port });
    server.setNoDelay(true);
    let gone = false;
    /** Per toxic id: when (ms) this link first met it, and its timer. */
    const met = new Map<number, NodeJS.Timeout | undefined>();
    const passed: Record<Direction, number> = { upstream: 0, downstream: 0 };

    const destroy = (reset: boolean) => {
      if (gone) return;
      gone = true;
      links.delete(link);
      for (const timer of met.values()) if (timer !== undefined) clearTimeout(timer);
      if (reset) {
        for (const socket of [client, server]) {
          if (typeof socket.resetAndDestroy === 'function' && socket.readyState !== 'opening')
            socket.resetAndDestroy();
          else socket.destroy();
        }
      } else {
        client.destroy();
        server.destroy();
      }
    };
    const cutBy = (reset: boolean) => {
      if (gone) return;
      cut++;
      destroy(reset);
    };

    const onToxics = () => {
      for (const toxic of toxics) {
        if (met.has(toxic.id)) continue;
        const { spec } = toxic;
        if (spec.type === 'reset_peer') {
          met.set(
            toxic.id,
            setTimeout(() => cutBy(true), spec.timeoutMs ?? 0),
          );
        } else if (spec.type === 'timeout' && (spec.timeoutMs ?? 0) > 0) {
          met.set(
            toxic.id,
            setTimeout(() => cutBy(false), spec.timeoutMs),
          );
        } else {
          met.set(toxic.id, undefined);
        }
      }
      for (const [id, timer] of met) {
        if (toxics.some((t) => t.id === id)) continue;
        if (timer !== undefined) clearTimeout(timer);
        met.delete(id);
      }
    };

    const link: Link = { client, server, onToxics, destroy };
    links.add(link);
    onToxics();

    /** One direction: chunks queued in arrival order, each released when its toxics allow. */
    const pump = (direction: Direction, from: Socket, to: Socket) => {
      const queue: Array<{ chunk: Buffer; at: number }> = [];
      let running = false;
      let ended = false;
      let releaseAt = 0;

      const write = async (chunk: Buffer) => {
        if (gone || chunk.length === 0) return;
        bytes[direction] += chunk.length;
        if (!to.write(chunk)) {
          // `once` rejects when `to` errors (a peer that ended it: EPIPE). Its 'error' handler
          // ends the link; the wait just stops — else the fire-and-forget pump below rejects
          // unhandled (seen in CI after the PostgreSQL-down scenario).
          await Promise.race([once(to, 'drain'), once(to, 'close')]).catch(() => {});
        }
      };

      const deliver = async (chunk: Buffer, at: number) => {
        let pieces: Buffer[] = [chunk];
        for (const { spec } of toxicsFor(direction)) {
          if (gone) return;
          switch (spec.type) {
            case 'timeout':
              return; // dropped: a blackhole
            case 'latency': {
              const jitter = spec.jitterMs ?? 0;
              const delay = spec.latencyMs + (jitter > 0 ? randomInt(-jitter, jitter + 1) : 0);
              // Held from its arrival, never before an earlier chunk: order is kept.
              releaseAt = Math.max(releaseAt, at + Math.max(0, delay));
              const wait = releaseAt - Date.now();
              if (wait > 0) await sleep(wait);
              break;
            }
            case 'bandwidth': {
              const size = pieces.reduce((n, p) => n + p.length, 0);
              await sleep((size / (spec.rateKBps * 1024)) * 1000);
              break;
            }
            case 'slicer': {
              const sliced: Buffer[] = [];
              const variation = spec.sizeVariation ?? 0;
              for (const piece of pieces) {
                let offset = 0;
                while (offset < piece.length) {
                  const size = Math.max(
                    1,
                    spec.averageSize + (variation > 0 ? randomInt(-variation, variation + 1) : 0),
                  );
                  sliced.push(piece.subarray(offset, offset + size));
                  offset += size;
                }
              }
              pieces = sliced;
              break;
            }
            case 'limit_data': {
              const allowed = spec.bytes - passed[direction];
              const kept: Buffer[] = [];
              let room = Math.max(0, allowed);
              for (const piece of pieces) {
                if (room <= 0) break;
                kept.push(piece.subarray(0, room));
                room -= Math.min(room, piece.length);
              }
              const size = pieces.reduce((n, p) => n + p.length, 0);
              if (size >= allowed) {
                for (const piece of kept) {
                  passed[direction] += piece.length;
                  await write(piece);
                }
                to.end();
                cutBy(false);
                return;
              }
              break;
            }
            case 'reset_peer':
              break; // acts through its timer
          }
        }
        const slicer = toxicsFor(direction).find((t) => t.spec.type === 'slicer')?.spec;
        const gapUs = slicer?.type === 'slicer' ? (slicer.delayUs ?? 0) : 0;
        for (const [i, piece] of pieces.entries()) {
          if (gone) return;
          if (i > 0 && gapUs > 0) await sleep(gapUs / 1000);
          passed[direction] += piece.length;
          await write(piece);
        }
      };

      const run = async () => {
        if (running) return;
        running = true;
        while (queue.length > 0 && !gone) {
          const next = queue.shift() as { chunk: Buffer; at: number };
          await deliver(next.chunk, next.at);
          if (queue.length < 16) from.resume();
        }
        running = false;
        if (ended && queue.length === 0 && !gone) to.end();
      };
      /** Nothing queued or being delivered (a slicer or latency toxic may still hold chunks). */
      const idle = () => !running && queue.length === 0;

      from.on('data', (chunk: Buffer) => {
        queue.push({ chunk, at: Date.now() });
        if (queue.length >= 64) from.pause();
        run().catch(() => destroy(false));
      });
      from.on('end', () => {
        ended = true;
        if (!running && queue.length === 0 && !gone) to.end();
      });
      return { idle };
    };

    pump('upstream', client, server);
    const downstream = pump('downstream', server, client);
    // An error or close on either side ends the link: a reset from the dependency reaches the app
    // as a reset, an ordinary close as a close.
    server.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ECONNRESET') cutBy(true);
      else destroy(false);
    });
    client.on('error', () => destroy(false));
    server.on('close', () => {
      // An orderly close (a keep-alive connection the dependency retired after its last answer):
      // what it sent before closing still reaches the app — the pump ends the app's side once its
      // queue is delivered — as over a real connection. Closing now would cut a sliced or delayed
      // answer short (seen: nginx aborting responses mid-body when the app closed its 1000th request's socket).
      if (!gone && !downstream.idle()) return;
      if (!gone) {
        gone = true;
        links.delete(link);
        for (const timer of met.values()) if (timer !== undefined) clearTimeout(timer);
        client.end();
        setTimeout(() => client.destroy(), 1000).unref();
      }
    });
    client.on('close', () => destroy(false));
  };

  let listener = createServer(handle);
  await listen(listener, options.port ?? 0, host);
  const port = (listener.address() as { port: number }).port;

  const add = (spec: ToxicSpec, direction: Direction = 'downstream'): Toxic => {
    const toxic: Toxic = { id: nextId++, direction, spec };
    toxics = [...toxics, toxic];
    for (const link of links) link.onToxics();
    return toxic;
  };
  const remove = (toxic: Toxic) => {
    toxics = toxics.filter((t) => t.id !== toxic.id);
    for (const link of links) link.onToxics();
  };
  const cutAll = () => {
    for (const link of [...links]) {
      cut++;
      link.destroy(false);
    }
  };

  const proxy: FaultProxy = {
    name: options.name,
    port,
    address: `${host}:${port}`,
    get target() {
      return target;
    },
    get isDown() {
      return down;
    },
    add,
    remove,
    clear() {
      toxics = [];
      for (const link of links) link.onToxics();
    },
    toxics: () => toxics,
    async down() {
      if (down || closed) return;
      down = true;
      const closing = new Promise<void>((resolve) => listener.close(() => resolve()));
      cutAll();
      await closing;
    },
    async up() {
      if (!down || closed) return;
      listener = createServer(handle);
      // The port was ours a moment ago; on a busy machine another process could take it, so try a while.
      for (let attempt = 0; ; attempt++) {
        try {
          await listen(listener, port, host);
          break;
        } catch (err) {
          if (attempt > 50) throw err;
          await sleep(100);
        }
      }
      down = false;
    },
    cutAll,
    retarget(next) {
      target = { host: next.host ?? '127.0.0.1', port: next.port };
    },
    stats: () => ({ accepted, open: links.size, bytes: { ...bytes }, cut }),
    async close() {
      if (closed) return;
      toxics = [];
      if (!down) await proxy.down();
      closed = true;
    },
  };
  return proxy;
}
