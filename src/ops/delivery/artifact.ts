import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  cpSync,
  existsSync,
  linkSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

/**
 * The release artifact, built once (in CI or on the operator's machine) and shipped unchanged to
 * every server: the compiled service and its ops files (`app.tar`), the production dependencies for
 * its lockfile and Node ABI (`deps.tar`, shipped only to servers that lack that set), and the
 * manifest (`release.json`): id, version, commit, Node version and ABI, lockfile hash, migrations
 * and their head, and a content hash the server checks before installing.
 * See docs/decisions/0065-release-artifact-and-layout.md.
 */

export interface Manifest {
  readonly id: string;
  readonly version: string;
  readonly commit: string;
  readonly builtAt: string;
  readonly node: string;
  readonly nodeAbi: string;
  readonly lockfileHash: string;
  readonly depsHash: string;
  readonly migrations: readonly string[];
  /** The contract migrations among them (they run only when every retained release knows them). */
  readonly contractMigrations: readonly string[];
  readonly migrationHead: string;
  readonly contentHash: string;
}

export interface Artifact {
  readonly dir: string;
  readonly manifest: Manifest;
  readonly appTar: string;
  readonly depsTar: string;
}

/** What goes into a release, relative to the project root. */
const releaseFiles = ['dist', 'deploy', 'scripts', 'public', 'package.json', 'package-lock.json'];

export function releaseId(at: Date, commit: string): string {
  const stamp = at
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d{3}Z$/, 'Z');
  return `${stamp}-${commit.slice(0, 7)}`;
}

/** Same pipeline as scripts/release-agent.sh content_hash, so both sides agree byte for byte. */
export function contentHash(dir: string): string {
  const result = spawnSync(
    'bash',
    [
      '-c',
      "set -o pipefail; find . -path ./node_modules -prune -o -type f ! -path ./release.json -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum | sha256sum | cut -d' ' -f1",
    ],
    { cwd: dir, encoding: 'utf8' },
  );
  if (result.status !== 0) throw new Error(`cannot hash ${dir}: ${result.stderr}`);
  return result.stdout.trim();
}

const sha256 = (data: string | Buffer) => createHash('sha256').update(data).digest('hex');

/** The production packages of the lockfile that are installed here (what `npm ci --omit=dev` makes). */
function productionPackages(root: string): string[] {
  const lock = JSON.parse(readFileSync(join(root, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, { dev?: boolean; optional?: boolean }>;
  };
  const top: string[] = [];
  for (const [path, entry] of Object.entries(lock.packages)) {
    if (path === '' || entry.dev === true) continue;
    // Nested packages come along with their parent directory.
    if (path.indexOf('node_modules/') !== path.lastIndexOf('node_modules/')) continue;
    if (existsSync(join(root, path))) top.push(path);
    else if (entry.optional !== true)
      throw new Error(`${path} is in the lockfile but not installed: run npm ci`);
  }
  return top.sort();
}

function tar(out: string, cwd: string, paths: string[]): void {
  execFileSync('tar', ['-c', '-f', out, '-C', cwd, '--', ...paths], { maxBuffer: 64 * 1024 * 1024 });
}

export interface BuildOptions {
  /** The project checkout (built: dist/ must be current). */
  readonly root: string;
  /** Where the artifact directory is written (<out>/<id>/). */
  readonly out: string;
  readonly commit?: string;
  readonly version?: string;
  /** Dependency archives by hash, reused between builds. */
  readonly cacheDir?: string;
  readonly at?: Date;
  /** Changes the staged release before it is hashed (tests build broken releases with it). */
  readonly mutate?: (stagingDir: string) => void;
}

function git(root: string, args: string[]): string | undefined {
  const result = spawnSync('git', ['-C', root, ...args], { encoding: 'utf8' });
  return result.status === 0 ? result.stdout.trim() : undefined;
}

/**
 * The migrations of the staged release itself (its dist/db/migrator.js, loaded in a child process
 * with the builder's node_modules), so the manifest describes the release that ships, even one
 * built from a changed copy of the tree — never the builder's own code.
 */
function stagedMigrations(root: string, staging: string): Array<{ name: string; phase: string }> {
  const link = join(staging, 'node_modules');
  symlinkSync(join(root, 'node_modules'), link);
  try {
    const migrator = pathToFileURL(join(staging, 'dist', 'db', 'migrator.js')).href;
    const out = execFileSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `const m = await import(${JSON.stringify(migrator)}); process.stdout.write(JSON.stringify(m.migrationList().map(({ name, phase }) => ({ name, phase }))));`,
      ],
      { encoding: 'utf8' },
    );
    return JSON.parse(out) as Array<{ name: string; phase: string }>;
  } finally {
    rmSync(link, { force: true });
  }
}

export function buildArtifact(options: BuildOptions): Artifact {
  const root = resolve(options.root);
  if (!existsSync(join(root, 'dist', 'main.js')))
    throw new Error(`${root}/dist is missing: run npm run build`);
  const commit = options.commit ?? git(root, ['rev-parse', 'HEAD']) ?? '0000000';
  if (!/^[0-9a-f]{7,40}$/.test(commit)) throw new Error(`commit must be hex (got ${commit})`);
  const version =
    options.version ?? git(root, ['describe', '--tags', '--always', '--dirty']) ?? commit.slice(0, 7);
  if (!/^[A-Za-z0-9._+-]{1,64}$/.test(version))
    throw new Error(`version must be a plain tag (got ${version})`);
  const lockfile = readFileSync(join(root, 'package-lock.json'));
  const nodeAbi = process.versions.modules;
  const depsHash = sha256(`${sha256(lockfile)}\n${nodeAbi}\n${process.platform}-${process.arch}`);
  const id = releaseId(options.at ?? new Date(), commit);

  const cacheDir = resolve(options.cacheDir ?? join(root, '.release-cache'));
  mkdirSync(cacheDir, { recursive: true });
  const cachedDeps = join(cacheDir, `deps-${depsHash}.tar`);
  if (!existsSync(cachedDeps)) {
    const partial = `${cachedDeps}.${process.pid}.partial`;
    tar(partial, root, productionPackages(root));
    execFileSync('mv', ['-f', partial, cachedDeps]);
  }

  const staging = mkdtempSync(join(tmpdir(), 'shipshape-release-'));
  try {
    for (const entry of releaseFiles)
      if (existsSync(join(root, entry))) cpSync(join(root, entry), join(staging, entry), { recursive: true });
    options.mutate?.(staging);
    const list = stagedMigrations(root, staging);
    const migrations = list.map((m) => m.name);
    const manifest: Manifest = {
      id,
      version,
      commit,
      builtAt: new Date().toISOString(),
      node: process.version,
      nodeAbi,
      lockfileHash: sha256(lockfile),
      depsHash,
      migrations,
      contractMigrations: list.filter((m) => m.phase === 'contract').map((m) => m.name),
      migrationHead: migrations.at(-1) ?? '',
      contentHash: contentHash(staging),
    };
    // One line: the agent reads fields with sed, without jq.
    writeFileSync(join(staging, 'release.json'), `${JSON.stringify(manifest)}\n`);
    const dir = join(resolve(options.out), id);
    mkdirSync(dir, { recursive: true });
    tar(join(dir, 'app.tar'), staging, ['.']);
    writeFileSync(join(dir, 'release.json'), `${JSON.stringify(manifest)}\n`);
    const depsTar = join(dir, 'deps.tar');
    rmSync(depsTar, { force: true });
    try {
      linkSync(cachedDeps, depsTar);
    } catch {
      cpSync(cachedDeps, depsTar);
    }
    return { dir, manifest, appTar: join(dir, 'app.tar'), depsTar };
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
}

export function readArtifact(dir: string): Artifact {
  const abs = resolve(dir);
  const file = join(abs, 'release.json');
  if (!existsSync(file)) throw new Error(`${abs} is not a release artifact (no release.json)`);
  const manifest = JSON.parse(readFileSync(file, 'utf8')) as Manifest;
  for (const part of ['app.tar', 'deps.tar'])
    if (!existsSync(join(abs, part))) throw new Error(`${abs} has no ${part}`);
  return { dir: abs, manifest, appTar: join(abs, 'app.tar'), depsTar: join(abs, 'deps.tar') };
}
