import { execFile, spawn } from 'node:child_process';
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

/**
 * Runs `user:create-admin` on a pseudo-terminal (util-linux `script`), typing each answer only once
 * its prompt is on the screen, as a person would. The keys go through the terminal, so whatever it
 * echoes is in `output`.
 */
export async function onTerminal(
  env: Record<string, string>,
  answers: readonly string[],
  username: string,
): Promise<{ status: number | null; output: string }> {
  built ??= ensureBuilt();
  await built;
  const entry = new URL('../../dist/cli/create-admin.js', import.meta.url).pathname;
  const command = `'${process.execPath}' '${entry}' --email ${username}@example.com --username ${username}`;
  return new Promise((resolve, reject) => {
    const child = spawn('script', ['-qec', command, '/dev/null'], {
      env: { ...process.env, ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 300_000);
    let output = '';
    let answered = 0;
    const prompts = [/Password \(input hidden\): $/, /The same password again: $/];
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      output += chunk;
      const prompt = prompts[answered];
      if (prompt !== undefined && answered < answers.length && prompt.test(output)) {
        child.stdin.write(`${answers[answered]}\r`);
        answered += 1;
      }
    });
    child.stderr.on('data', (chunk: Buffer) => {
      output += chunk.toString('utf8');
    });
    child.once('error', reject);
    child.once('exit', (status) => {
      clearTimeout(timer);
      child.stdin.end();
      resolve({ status, output: output.replaceAll('\r\n', '\n') });
    });
  });
}
