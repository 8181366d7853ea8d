// Preloaded (node --import) into a benchmark-only server: counts the statements node-postgres sends,
// by SQL text. node-postgres does not pipeline, so each one is a round trip. On SIGUSR2 the counts so
// far are written to BENCH_QUERY_COUNT_FILE as JSON. Never loaded into the measured servers.
import { writeFileSync } from 'node:fs';
import pg from 'pg';

const counts = new Map();
const query = pg.Client.prototype.query;
pg.Client.prototype.query = function countedQuery(...args) {
  const first = args[0];
  const text = typeof first === 'string' ? first : typeof first?.text === 'string' ? first.text : '?';
  counts.set(text, (counts.get(text) ?? 0) + 1);
  return query.apply(this, args);
};
process.on('SIGUSR2', () => {
  writeFileSync(
    process.env.BENCH_QUERY_COUNT_FILE ?? 'query-count.json',
    JSON.stringify(Object.fromEntries(counts)),
  );
});
