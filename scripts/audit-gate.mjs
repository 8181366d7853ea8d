#!/usr/bin/env node
// CI's audit gate: reads `npm audit --omit=dev --json` and fails on every high or critical advisory
// in a production dependency that .github/audit-allowlist.json does not accept — an entry accepts
// one advisory (its GHSA id, or the package name) until its `expires` date, with a reason; an
// expired entry is itself a failure, so nothing stays allowed by being forgotten.
//
//   npm audit --omit=dev --json > audit.json; node scripts/audit-gate.mjs --input audit.json
//   [--allowlist FILE] [--today YYYY-MM-DD]
// Exit codes: 0 clean, 1 advisories not allowed (listed), 2 usage or unreadable input.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

function usage(message) {
  process.stderr.write(
    `${message}\nusage: node scripts/audit-gate.mjs --input audit.json [--allowlist FILE] [--today YYYY-MM-DD]\n`,
  );
  process.exit(2);
}

let values;
try {
  ({ values } = parseArgs({
    options: { input: { type: 'string' }, allowlist: { type: 'string' }, today: { type: 'string' } },
    strict: true,
  }));
} catch (err) {
  usage(err.message);
}
if (values.input === undefined) usage('--input is required');
const today = values.today ?? new Date().toISOString().slice(0, 10);
if (!/^\d{4}-\d{2}-\d{2}$/.test(today)) usage('--today must be YYYY-MM-DD');

const read = (file) => {
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    usage(`cannot read ${file}: ${err.message}`);
  }
};
const audit = read(values.input);
const allowlist = read(
  values.allowlist ?? new URL('../.github/audit-allowlist.json', import.meta.url).pathname,
);
if (typeof audit.vulnerabilities !== 'object' || audit.vulnerabilities === null)
  usage(
    `${values.input} is not npm audit --json output${audit.error ? ` (npm said: ${audit.error.summary ?? audit.error.code})` : ''}`,
  );

const problems = [];
const entries = Array.isArray(allowlist.allow) ? allowlist.allow : [];
for (const entry of entries) {
  if (
    typeof entry.id !== 'string' ||
    typeof entry.reason !== 'string' ||
    !/^\d{4}-\d{2}-\d{2}$/.test(entry.expires ?? '')
  )
    problems.push(`allow-list entry ${JSON.stringify(entry)} needs id, reason and expires (YYYY-MM-DD)`);
  else if (entry.expires < today)
    problems.push(`allow-list entry ${entry.id} expired on ${entry.expires} (${entry.reason})`);
}
const allowed = (ids) =>
  entries.some((e) => typeof e.id === 'string' && ids.includes(e.id) && (e.expires ?? '') >= today);

let accepted = 0;
for (const [name, vuln] of Object.entries(audit.vulnerabilities)) {
  if (vuln.severity !== 'high' && vuln.severity !== 'critical') continue;
  const advisories = (vuln.via ?? []).filter((v) => typeof v === 'object');
  // A package flagged only through another one is reported where the advisory is.
  if (advisories.length === 0) continue;
  for (const advisory of advisories) {
    const ghsa = /GHSA-[\w-]+/.exec(advisory.url ?? '')?.[0];
    const ids = [name, ...(ghsa ? [ghsa] : [])];
    if (allowed(ids)) {
      accepted++;
      continue;
    }
    problems.push(
      `${vuln.severity}: ${name} ${advisory.range ?? ''} — ${advisory.title ?? 'advisory'} (${ghsa ?? advisory.url ?? 'no id'})`,
    );
  }
}
if (problems.length > 0) {
  process.stderr.write(`audit gate: ${problems.length} problem(s):\n  ${problems.join('\n  ')}\n`);
  process.exit(1);
}
process.stdout.write(
  `audit gate: no high or critical advisory in production dependencies${accepted > 0 ? ` (${accepted} accepted by the allow-list until their expiry)` : ''}\n`,
);
