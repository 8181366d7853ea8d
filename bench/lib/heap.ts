import { readFileSync } from 'node:fs';

/** A V8 heap snapshot (.heapsnapshot) summed by node type and constructor name: bytes and counts. */
export interface HeapSummary {
  readonly totalBytes: number;
  readonly nodes: number;
  readonly byName: ReadonlyMap<string, { bytes: number; count: number }>;
}

export function summarizeHeap(path: string): HeapSummary {
  const snapshot = JSON.parse(readFileSync(path, 'utf8')) as {
    snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } };
    nodes: number[];
    strings: string[];
  };
  const fields = snapshot.snapshot.meta.node_fields;
  const types = snapshot.snapshot.meta.node_types[0];
  const width = fields.length;
  const typeAt = fields.indexOf('type');
  const nameAt = fields.indexOf('name');
  const sizeAt = fields.indexOf('self_size');
  const byName = new Map<string, { bytes: number; count: number }>();
  let totalBytes = 0;
  const { nodes, strings } = snapshot;
  for (let i = 0; i < nodes.length; i += width) {
    const type = types[nodes[i + typeAt] as number] ?? 'unknown';
    const size = nodes[i + sizeAt] as number;
    totalBytes += size;
    // Objects by constructor; strings, code, arrays … by their type.
    const key =
      type === 'object' || type === 'closure' ? `${type} ${strings[nodes[i + nameAt] as number]}` : type;
    const entry = byName.get(key);
    if (entry === undefined) byName.set(key, { bytes: size, count: 1 });
    else {
      entry.bytes += size;
      entry.count += 1;
    }
  }
  return { totalBytes, nodes: nodes.length / width, byName };
}

/** The entries that grew most from `before` to `after`, in bytes. */
export function heapGrowth(
  before: HeapSummary,
  after: HeapSummary,
  top = 10,
): Array<{ name: string; bytes: number; count: number }> {
  const rows: Array<{ name: string; bytes: number; count: number }> = [];
  for (const [name, a] of after.byName) {
    const b = before.byName.get(name) ?? { bytes: 0, count: 0 };
    rows.push({ name, bytes: a.bytes - b.bytes, count: a.count - b.count });
  }
  return rows.sort((x, y) => y.bytes - x.bytes).slice(0, top);
}
