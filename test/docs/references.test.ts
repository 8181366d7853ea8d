import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { describe, test } from 'node:test';

/**
 * Every reference in the repository leads somewhere inside it (operator walkthrough, issue 21):
 * relative Markdown links and their #fragments, "guide correction n", "roadmap n" and
 * "security probe 2026-12-02, finding n" citations, decision-record file names, and paths quoted in
 * the docs. Nothing cites a file that only the project's authors have.
 */

const root = new URL('../..', import.meta.url).pathname;

/** Tracked files plus new ones not ignored: what a clone (and this commit) will hold. */
const files = execFileSync('git', ['ls-files', '--cached', '--others', '--exclude-standard'], {
  cwd: root,
  encoding: 'utf8',
})
  .split('\n')
  .filter((f) => f !== '' && existsSync(join(root, f)));

const textExtensions =
  /\.(ts|mts|cts|mjs|cjs|js|md|json|ya?ml|conf|template|sh|tf|tftpl|lua|html|css|example)$|(^|\/)(run|\.env\.example|\.gitignore)$/;
const textFiles = files.filter((f) => textExtensions.test(f) && f !== 'package-lock.json');
const markdownFiles = files.filter((f) => f.endsWith('.md'));
const read = (file: string) => readFileSync(join(root, file), 'utf8');

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered. */
function headingAnchors(markdown: string): Set<string> {
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  let fenced = false;
  for (const line of markdown.split('\n')) {
    if (/^\s*(```|~~~)/.test(line)) fenced = !fenced;
    if (fenced) continue;
    const heading = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (heading === null) continue;
    const text = (heading[1] ?? '')
      .replace(/`([^`]*)`/g, '$1')
      .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
      .replace(/<[^>]+>/g, '');
    const base = text
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\p{M}\s_-]/gu, '')
      .replace(/\s/g, '-');
    const count = seen.get(base) ?? 0;
    seen.set(base, count + 1);
    anchors.add(count === 0 ? base : `${base}-${count}`);
  }
  for (const [, id] of markdown.matchAll(/<a\s+(?:id|name)="([^"]+)"/g)) if (id) anchors.add(id);
  return anchors;
}

/** The Markdown links of a file outside code blocks and code spans: [text](target). */
function markdownLinks(markdown: string): string[] {
  const links: string[] = [];
  let fenced = false;
  for (const line of markdown.split('\n')) {
    if (/^\s*(```|~~~)/.test(line)) fenced = !fenced;
    if (fenced) continue;
    const prose = line.replace(/`[^`]*`/g, '');
    for (const [, target] of prose.matchAll(/\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) {
      if (target !== undefined) links.push(target);
    }
  }
  return links;
}

/** Numbers of a citation: "3", "11–14", "2 and 4", "5, 9 and 11". */
function citedNumbers(text: string): number[] {
  const numbers: number[] = [];
  for (const part of text.split(/,|\band\b/)) {
    const range = /(\d+)\s*[–-]\s*(\d+)/.exec(part);
    if (range !== null) {
      for (let n = Number(range[1]); n <= Number(range[2]); n++) numbers.push(n);
      continue;
    }
    const single = /\d+/.exec(part);
    if (single !== null) numbers.push(Number(single[0]));
  }
  return numbers;
}

const numberList = String.raw`\d+(?:\s*[–-]\s*\d+)?(?:(?:,\s*|\s+and\s+)\d+(?:\s*[–-]\s*\d+)?)*`;

/** Numbered entries of a doc: `## n. …` headings or `n. ` list items at the start of a line. */
function entries(file: string, pattern: RegExp): Set<number> {
  return new Set([...read(file).matchAll(pattern)].map((m) => Number(m[1])));
}

interface Citation {
  readonly name: string;
  readonly pattern: RegExp;
  readonly doc: string;
  readonly entries: RegExp;
}

const citations: Citation[] = [
  {
    name: 'guide correction',
    pattern: new RegExp(String.raw`guide corrections?\s+(${numberList})`, 'gi'),
    doc: 'docs/guide-corrections.md',
    entries: /^## (\d+)\. /gm,
  },
  {
    name: 'roadmap',
    pattern: new RegExp(String.raw`\broadmap\s+(?:items?\s+)?(${numberList})`, 'gi'),
    doc: 'docs/roadmap.md',
    entries: /^(\d+)\. /gm,
  },
  {
    name: 'security probe',
    pattern: new RegExp(String.raw`security probe 2026-12-02,?\s+\(?findings?\s+(${numberList})`, 'gi'),
    doc: 'docs/security-probe-2026-12-02.md',
    entries: /^## (\d+)\. /gm,
  },
];

describe('references resolve inside the repository', () => {
  test('every relative Markdown link leads to a file, and every #fragment to a heading', () => {
    const broken: string[] = [];
    for (const file of markdownFiles) {
      for (const link of markdownLinks(read(file))) {
        if (/^[a-z][a-z0-9+.-]*:/i.test(link) || link.startsWith('//')) continue; // http:, mailto:, …
        const [path = '', fragment] = link.split('#', 2);
        const target = path === '' ? file : normalize(join(dirname(file), decodeURI(path)));
        if (target.startsWith('..') || !existsSync(join(root, target))) {
          broken.push(`${file}: ${link} (no such file in the repository)`);
          continue;
        }
        if (fragment !== undefined && fragment !== '' && target.endsWith('.md')) {
          if (!headingAnchors(read(target)).has(fragment.toLowerCase()))
            broken.push(`${file}: ${link} (no heading #${fragment} in ${target})`);
        }
      }
    }
    assert.deepEqual(broken, []);
  });

  test('paths quoted in README and docs exist', () => {
    const missing: string[] = [];
    const quoted = /`((?:src|test|deploy|scripts|bench|stack|docs|client|public|\.ci)\/[A-Za-z0-9_./-]+)`/g;
    for (const file of markdownFiles) {
      for (const [, path] of read(file).matchAll(quoted)) {
        if (path === undefined) continue;
        const clean = path.replace(/[.,:;]+$/, '');
        if (!existsSync(join(root, clean))) missing.push(`${file}: ${clean}`);
      }
    }
    assert.deepEqual(missing, []);
  });

  test('decision records are cited by file names that exist', () => {
    const missing: string[] = [];
    for (const file of textFiles) {
      for (const [name] of read(file).matchAll(/(?<![\w-])\d{4}-[a-z0-9]+(?:-[a-z0-9]+)*\.md\b/g)) {
        if (!existsSync(join(root, 'docs', 'decisions', name))) missing.push(`${file}: ${name}`);
      }
    }
    assert.deepEqual(missing, []);
  });

  test('nothing cites the authors’ own files (the guide’s defect list, the shared roadmap, research notes)', () => {
    // Built from pieces, so that this file does not cite them itself.
    const forbidden = [
      new RegExp(['KNOWN', 'DEFECTS'].join('-'), 'i'),
      new RegExp(String.raw`\bROAD${'MAP'}\.md`),
      // Climbing out of the project to the shared folder (a release layout's ../../shared/deps is fine).
      new RegExp(String.raw`(?<![./])\.\./${'shared'}/`),
      new RegExp(String.raw`\bresearch/[a-z-]+\.${'md'}`),
      new RegExp(`issue ${'notes'}`, 'i'),
    ];
    const found: string[] = [];
    for (const file of textFiles) {
      read(file)
        .split('\n')
        .forEach((line, i) => {
          for (const pattern of forbidden)
            if (pattern.test(line)) found.push(`${file}:${i + 1}: ${line.trim().slice(0, 120)}`);
        });
    }
    assert.deepEqual(found, []);
  });

  for (const citation of citations) {
    test(`every "${citation.name} n" citation names an entry of ${citation.doc}`, () => {
      assert.ok(existsSync(join(root, citation.doc)) && statSync(join(root, citation.doc)).isFile());
      const known = entries(citation.doc, citation.entries);
      assert.ok(known.size > 0, `${citation.doc} has numbered entries`);
      const unresolved: string[] = [];
      let count = 0;
      for (const file of textFiles) {
        for (const match of read(file).matchAll(citation.pattern)) {
          for (const n of citedNumbers(match[1] ?? '')) {
            count += 1;
            if (!known.has(n)) unresolved.push(`${relative(root, join(root, file))}: ${match[0]}`);
          }
        }
      }
      assert.deepEqual(unresolved, []);
      assert.ok(count > 0, `something cites ${citation.doc}`);
    });
  }

  test('the checker itself: anchors, links and citation numbers are read as GitHub and people do', () => {
    const anchors = headingAnchors(
      '# A `b` title: c!\n## 11. A (Redis) outage\n```\n# not a heading\n```\n## A `b` title: c!\n',
    );
    assert.deepEqual([...anchors], ['a-b-title-c', '11-a-redis-outage', 'a-b-title-c-1']);
    assert.deepEqual(markdownLinks('see [x](a.md#b) and `[y](not.md)`\n```\n[z](code.md)\n```'), ['a.md#b']);
    assert.deepEqual(citedNumbers('11–14'), [11, 12, 13, 14]);
    assert.deepEqual(citedNumbers('2 and 4'), [2, 4]);
    assert.deepEqual(citedNumbers('5, 9 and 11'), [5, 9, 11]);
  });
});
