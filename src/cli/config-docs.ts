import { ConfigError, describeConfig, loadConfig } from '../config.js';

/**
 * Prints every configuration variable: a Markdown table for the README (default) or an
 * .env.example (`--env`). Both are generated from the same declarations config.ts parses with.
 */
const docs = describeConfig();

/** Set by the process manager, never by hand: listed, but commented out. */
const setByPm2 = new Set(['NODE_APP_INSTANCE']);

/** A default the file can state as a value: loadConfig accepts it on its own (not prose like "true on SQLite"). */
function loadsAsValue(name: string, value: string): boolean {
  try {
    loadConfig({ [name]: value });
    return true;
  } catch (err) {
    if (err instanceof ConfigError) return false;
    throw err;
  }
}

if (process.argv.includes('--env')) {
  const lines = [
    '# Shipshape configuration. Every variable is optional. Uncommented lines show the defaults;',
    '# commented ones are secrets, empty, derived from other settings, or set by PM2.',
    '# Loads as it is: cp .env.example .env && node --env-file=.env dist/main.js',
    '',
  ];
  for (const doc of docs) {
    lines.push(`# ${doc.description}`);
    const literal = doc.default.startsWith('(') ? '' : doc.default;
    const commented =
      doc.secret || literal === '' || setByPm2.has(doc.name) || !loadsAsValue(doc.name, literal);
    // A derived default is shown as prose in the comment, never as a value that would not load.
    const value = loadsAsValue(doc.name, literal) ? literal : '';
    if (value !== literal) lines.push(`# Default: ${literal}.`);
    lines.push(`${commented ? '# ' : ''}${doc.name}=${value}`);
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
