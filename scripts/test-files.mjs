// The full run's test runner (scripts/test.mjs starts it under `node --import tsx` when no file or
// flag narrows the run): node's run() API, because it starts the files in the order given while
// `node --test` sorts them by name, and the longest files must start first. Each file runs in a
// child process that inherits this one's --import tsx.
import { resolve } from 'node:path';
import { run } from 'node:test';
import { spec } from 'node:test/reporters';

const files = process.argv.slice(2).map((file) => resolve(file));
const stream = run({
  files,
  // Both set by test.mjs (its comments say why).
  concurrency: Number(process.env.TEST_CONCURRENCY ?? 3),
  timeout: Number(process.env.TEST_TIMEOUT_MS ?? 1_200_000),
});
// run() reports and never sets the exit code itself.
stream.on('test:fail', (data) => {
  if (data.todo === undefined || data.todo === false) process.exitCode = 1;
});
stream.compose(spec).pipe(process.stdout);
