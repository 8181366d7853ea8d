import { execFile } from 'node:child_process';
import { ensureBuilt } from '../harness/pm2.js';

/**
 * Runs a command-line entry point the way `npm run` does: the built one in dist/ (compiled once
 * per run), so a test pays node's start-up, not a TypeScript compile, per command.
 */

let built: Promise<void> | undefined;

export interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

export function cli(script: string, env: Record<string, string>, ...args: string[]): Promise<CliResult> {
  return cliWithInput(script, env, undefined, ...args);
}

export async function cliWithInput(
  script: string,
  env: Record<string, string>,
  input: string | undefined,
  ...args: string[]
): Promise<CliResult> {
  built ??= ensureBuilt();
  await built;
  const entry = new URL(`../../dist/cli/${script}.js`, import.meta.url).pathname;
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [entry, ...args],
      { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 300_000 },
      (error, stdout, stderr) =>
        resolve({ status: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr }),
    );
    child.stdin?.end(input ?? '');
  });
}
