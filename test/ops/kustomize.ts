import assert from 'node:assert/strict';
import { parseAllDocuments } from 'yaml';
import { run } from './support.js';

/** `kubectl kustomize <dir>`, parsed: the objects a `kubectl apply -k` would send. */
export type Obj = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; annotations?: Record<string, string>; labels?: Record<string, string> };
  // biome-ignore lint/suspicious/noExplicitAny: rendered manifests are checked field by field below
  spec?: any;
  data?: Record<string, string>;
};

export function render(overlay: string): Obj[] {
  const result = run('kubectl', ['kustomize', overlay]);
  assert.equal(result.status, 0, result.output);
  return parseAllDocuments(result.stdout).map((doc) => {
    assert.deepEqual(doc.errors, [], `${overlay} renders valid YAML`);
    return doc.toJS() as Obj;
  });
}
