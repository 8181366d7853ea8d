import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Polls `check` until it returns true, for up to `timeoutMs` (generous by default: a loaded CI
 * machine is slow, never wrong). A deadline that passed while the process was busy never decides on
 * its own: one more check runs after it, so only a condition that is still false fails.
 */
export async function waitUntil(
  check: () => boolean | Promise<boolean>,
  options: { timeoutMs?: number; intervalMs?: number; what?: string } = {},
): Promise<void> {
  const { timeoutMs = 60_000, intervalMs = 50, what = 'condition' } = options;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  const attempt = async () => {
    try {
      return await check();
    } catch (err) {
      lastError = err;
      return false;
    }
  };
  while (Date.now() < deadline) {
    if (await attempt()) return;
    await sleep(intervalMs);
  }
  if (await attempt()) return;
  const cause = lastError instanceof Error ? `: ${lastError.message}` : '';
  throw new Error(`${what} not met within ${timeoutMs} ms${cause}`);
}
