import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { Actuator } from './autoscaler.js';
import type { ScrapedInstance } from './samplers.js';

const run = promisify(execFile);

/**
 * A command hook for anything without an actuator here (another cloud, a script around an
 * orchestrator). The hook is an executable, run without a shell:
 *
 *   <hook> instances   → stdout: a count ("3"), or a JSON array of
 *                        {"id": "...", "startedAt": <ms epoch>, "metricsUrl": "http://…/metrics"?}
 *   <hook> scale <n>   → make it n (absolute), exit 0 once the new instances serve and the removed
 *                        ones have drained; non-zero (stderr says why) when it could not
 *
 * A bare count gives no start times, so warm-up is measured from when the monitor first saw each
 * instance.
 */
export function commandActuator(options: {
  command: string;
  args?: readonly string[];
  timeoutMs?: number;
}): Actuator {
  const firstSeen = new Map<string, number>();
  const exec = async (...args: string[]) => {
    try {
      const { stdout } = await run(options.command, [...(options.args ?? []), ...args], {
        timeout: options.timeoutMs ?? 600_000,
        maxBuffer: 1024 * 1024,
      });
      return stdout;
    } catch (err) {
      const e = err as { stderr?: string; code?: unknown; message: string };
      throw new Error(
        `${options.command} ${args.join(' ')} failed (${e.code ?? 'error'}): ${(e.stderr || e.message).trim()}`,
      );
    }
  };
  return {
    name: 'command',
    async instances(): Promise<ScrapedInstance[]> {
      const out = (await exec('instances')).trim();
      if (/^[0-9]+$/.test(out)) {
        const count = Number(out);
        const now = Date.now();
        for (let i = 0; i < count; i++) if (!firstSeen.has(String(i))) firstSeen.set(String(i), now);
        for (const id of firstSeen.keys()) if (Number(id) >= count) firstSeen.delete(id);
        return Array.from({ length: count }, (_, i) => ({
          id: String(i),
          startedAt: firstSeen.get(String(i)) ?? now,
        }));
      }
      let parsed: unknown;
      try {
        parsed = JSON.parse(out);
      } catch {
        throw new Error(
          `${options.command} instances printed neither a count nor JSON: ${out.slice(0, 200)}`,
        );
      }
      if (!Array.isArray(parsed)) throw new Error(`${options.command} instances: expected a JSON array`);
      return parsed.map((item: unknown, i) => {
        const o = item as { id?: unknown; startedAt?: unknown; metricsUrl?: unknown };
        if (typeof o.id !== 'string' || typeof o.startedAt !== 'number')
          throw new Error(
            `${options.command} instances: item ${i} needs a string id and a numeric startedAt`,
          );
        return {
          id: o.id,
          startedAt: o.startedAt,
          ...(typeof o.metricsUrl === 'string' && /^https?:\/\//.test(o.metricsUrl)
            ? { metricsUrl: o.metricsUrl }
            : {}),
        };
      });
    },
    async scaleTo(desired) {
      if (!Number.isInteger(desired) || desired < 0) throw new Error(`cannot scale to ${desired}`);
      await exec('scale', String(desired));
    },
  };
}
