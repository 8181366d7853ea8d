/** An ini file as sections of `key = value` entries (the entries before any header are under ''). */
export type Ini = Record<string, Record<string, string>>;

/**
 * `[section]`, `key = value`, `;` or `#` comments — the format PgBouncer and pgBackRest share.
 * `source` names the file in the error for a line that is none of these.
 */
export function parseIni(text: string, source = 'ini file'): Ini {
  const ini: Ini = {};
  let section = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith(';') || line.startsWith('#')) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header) {
      section = header[1] as string;
      ini[section] ??= {};
      continue;
    }
    const eq = line.indexOf('=');
    if (eq < 0) throw new Error(`${source}: not a key = value line: ${line}`);
    const entries = ini[section] ?? {};
    entries[line.slice(0, eq).trim()] = line.slice(eq + 1).trim();
    ini[section] = entries;
  }
  return ini;
}
