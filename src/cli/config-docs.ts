import { describeConfig } from '../config.js';

/**
 * Prints every configuration variable: a Markdown table for the README (default) or an
 * .env.example (`--env`). Both are generated from the same declarations config.ts parses with.
 */
const docs = describeConfig();

if (process.argv.includes('--env')) {
  const lines = [
    '# Shipshape configuration. Every variable is optional; the values shown are the defaults.',
    '',
  ];
  for (const doc of docs) {
    lines.push(`# ${doc.description}`);
    const value = doc.default.startsWith('(') ? '' : doc.default;
    lines.push(`${doc.secret || value === '' ? '# ' : ''}${doc.name}=${value}`);
    lines.push('');
  }
  process.stdout.write(lines.join('\n'));
} else {
  const escapeCell = (text: string) => text.replaceAll('|', '\\|');
  const rows = docs.map(
    (doc) => `| \`${doc.name}\` | ${escapeCell(doc.default)} | ${escapeCell(doc.description)} |`,
  );
  process.stdout.write(['| Variable | Default | Meaning |', '|---|---|---|', ...rows, ''].join('\n'));
}
