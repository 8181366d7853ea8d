import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { cp, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parse as parseHcl } from '@cdktf/hcl2json';
import { parse as parseYaml } from 'yaml';
import { run, skipWithout } from './support.js';

// deploy/terraform/digitalocean: `terraform fmt -check`, the variables' validation rules and the
// cloud-init rendering run with the real terraform binary (no provider is needed for those, so no
// download); the layout's policy is checked on the configuration as terraform parses HCL
// (@cdktf/hcl2json wraps HashiCorp's own parser). `terraform validate`/`plan` of the resources
// need the DigitalOcean provider, which cannot be downloaded here (see README "Infrastructure").

const dir = 'deploy/terraform/digitalocean';
const bootstrapPath = 'deploy/server/bootstrap.sh';

type Block = Record<string, unknown>;
interface Config {
  resource: Record<string, Record<string, Block[]>>;
  variable: Record<string, Block[]>;
  output: Record<string, Block[]>;
  locals: Block[];
}

async function loadConfig(): Promise<Config> {
  const merged: Config = { resource: {}, variable: {}, output: {}, locals: [] };
  for (const file of readdirSync(dir).filter((name) => name.endsWith('.tf'))) {
    const parsed = (await parseHcl(file, readFileSync(join(dir, file), 'utf8'))) as Partial<Config>;
    for (const [type, byName] of Object.entries(parsed.resource ?? {})) {
      merged.resource[type] = { ...merged.resource[type], ...byName };
    }
    Object.assign(merged.variable, parsed.variable ?? {});
    Object.assign(merged.output, parsed.output ?? {});
    merged.locals.push(...(parsed.locals ?? []));
  }
  return merged;
}

function resources(config: Config, type: string): Array<[string, Block]> {
  return Object.entries(config.resource[type] ?? {}).map(([name, blocks]) => {
    assert.equal(blocks.length, 1, `${type}.${name} is declared once`);
    return [name, blocks[0] as Block];
  });
}

function only(config: Config, type: string): [string, Block] {
  const found = resources(config, type);
  assert.equal(found.length, 1, `exactly one ${type}`);
  return found[0] as [string, Block];
}

/** How hcl2json writes a reference or expression: `${…}`. */
const tf = (expression: string) => `\${${expression}}`;

const blocks = (value: unknown): Block[] => (Array.isArray(value) ? (value as Block[]) : []);

describe('terraform: DigitalOcean layout', { skip: skipWithout('terraform') }, () => {
  let config: Config;
  let work: string;
  let env: NodeJS.ProcessEnv;
  before(async () => {
    config = await loadConfig();
    work = await mkdtemp(join(tmpdir(), 'shipshape-tf-'));
    const rc = join(work, 'terraformrc');
    await writeFile(rc, '');
    env = { ...process.env, TF_CLI_CONFIG_FILE: rc, TF_IN_AUTOMATION: '1', CHECKPOINT_DISABLE: '1' };
  });
  after(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  test('terraform fmt -check finds nothing to change', () => {
    const result = run(
      'terraform',
      ['fmt', '-check', '-recursive', '-diff', '-no-color', 'deploy/terraform'],
      {
        env,
      },
    );
    assert.equal(result.status, 0, result.output);
  });

  test('the app tag ties droplets, load balancer, cloud firewall and database firewalls together', () => {
    const [tagName] = only(config, 'digitalocean_tag');
    const tagRef = tf(`digitalocean_tag.${tagName}.id`);
    const [vpcName] = only(config, 'digitalocean_vpc');
    const vpcRef = tf(`digitalocean_vpc.${vpcName}.id`);

    const droplets = resources(config, 'digitalocean_droplet');
    assert.ok(droplets.length > 0);
    for (const [name, droplet] of droplets) {
      assert.equal(droplet.count, tf('var.app_count'), `${name}: droplets by count`);
      assert.deepEqual(droplet.tags, [tagRef], `${name} carries the app tag`);
      assert.equal(droplet.vpc_uuid, vpcRef, `${name} is in the VPC`);
      assert.equal(droplet.ssh_keys, tf('var.ssh_key_fingerprints'), `${name} has SSH keys`);
      assert.equal(droplet.user_data, tf('local.user_data'), `${name} runs the bootstrap through cloud-init`);
    }
    const [, lb] = only(config, 'digitalocean_loadbalancer');
    assert.equal(lb.droplet_tag, tagRef, 'the load balancer targets droplets by tag');
    assert.equal(lb.vpc_uuid, vpcRef);
    for (const [name, firewall] of resources(config, 'digitalocean_firewall')) {
      assert.deepEqual(firewall.tags, [tagRef], `${name} applies to the app tag`);
      assert.equal(firewall.droplet_ids, undefined, `${name}: by tag, not by droplet id`);
    }
  });

  test('ingress: nothing from anywhere; the app port only from the load balancer, SSH only from admin addresses', () => {
    const [lbName, lb] = only(config, 'digitalocean_loadbalancer');
    const firewalls = resources(config, 'digitalocean_firewall');
    assert.ok(firewalls.length > 0, 'a cloud firewall exists');
    const seenPorts = new Set<string>();
    for (const [name, firewall] of firewalls) {
      for (const rule of blocks(firewall.inbound_rule)) {
        const sources = (rule.source_addresses ?? []) as string[] | string;
        for (const source of Array.isArray(sources) ? sources : [sources]) {
          assert.ok(!['0.0.0.0/0', '::/0'].includes(source), `${name}: no inbound rule from anywhere`);
        }
        const port = String(rule.port_range ?? '');
        seenPorts.add(port);
        if (port === '22') {
          assert.equal(rule.source_addresses, tf('var.admin_cidrs'), 'SSH from the admin addresses only');
          assert.equal(rule.source_load_balancer_uids, undefined);
        } else if (rule.protocol === 'tcp') {
          assert.ok(
            [tf('var.app_port'), tf('tostring(var.app_port)'), '80', '443'].includes(port),
            `port ${port}`,
          );
          assert.deepEqual(rule.source_load_balancer_uids, [tf(`digitalocean_loadbalancer.${lbName}.id`)]);
          assert.equal(rule.source_addresses, undefined, 'the app port only from the load balancer');
        } else {
          assert.equal(
            rule.protocol,
            'icmp',
            `${name}: only tcp to the LB port, SSH and icmp inside the VPC`,
          );
          assert.deepEqual(rule.source_addresses, [tf('var.vpc_ip_range')]);
        }
      }
    }
    assert.ok(seenPorts.has('22'));
    // The load balancer itself is the only public entry: HTTPS, and HTTP only to redirect.
    const entries = blocks(lb.forwarding_rule).map((rule) => `${rule.entry_protocol}:${rule.entry_port}`);
    assert.deepEqual(entries.sort(), ['http:80', 'https:443']);
  });

  test('load balancer: HTTP→HTTPS redirect, health check on /ready, Let’s Encrypt certificate by name', () => {
    const [, lb] = only(config, 'digitalocean_loadbalancer');
    assert.equal(lb.redirect_http_to_https, true);
    const [check] = blocks(lb.healthcheck);
    assert.ok(check, 'a health check is configured');
    assert.equal(check.protocol, 'http');
    assert.equal(check.path, '/ready', 'readiness, not liveness (the guide checks /health)');
    assert.equal(check.port, tf('var.app_port'));
    const https = blocks(lb.forwarding_rule).find((rule) => rule.entry_protocol === 'https');
    assert.ok(https);
    const [certName, cert] = only(config, 'digitalocean_certificate');
    assert.equal(https.certificate_name, tf(`digitalocean_certificate.${certName}.name`));
    assert.equal(cert.type, 'lets_encrypt');
    assert.deepEqual(cert.domains, [tf('local.api_fqdn')]);
    assert.deepEqual(blocks(cert.lifecycle)[0]?.create_before_destroy, true);
    const [, record] = only(config, 'digitalocean_record');
    assert.equal(record.value, tf('digitalocean_loadbalancer.api.ip'));
  });

  test('databases: PostgreSQL and Valkey in the VPC, each behind a firewall admitting only the app tag', () => {
    const [vpcName] = only(config, 'digitalocean_vpc');
    const [tagName] = only(config, 'digitalocean_tag');
    const clusters = resources(config, 'digitalocean_database_cluster');
    assert.deepEqual(clusters.map(([, c]) => c.engine).sort(), ['pg', 'valkey']);
    const firewalls = resources(config, 'digitalocean_database_firewall');
    for (const [name, cluster] of clusters) {
      assert.equal(cluster.private_network_uuid, tf(`digitalocean_vpc.${vpcName}.id`), `${name} in the VPC`);
      const guard = firewalls.filter(
        ([, fw]) => fw.cluster_id === tf(`digitalocean_database_cluster.${name}.id`),
      );
      assert.equal(guard.length, 1, `${name} has a database firewall`);
      const rules = blocks((guard[0] as [string, Block])[1].rule);
      assert.deepEqual(rules, [{ type: 'tag', value: tf(`digitalocean_tag.${tagName}.id`) }]);
    }
  });

  test('secrets leave only as sensitive outputs; no token or password in the configuration', () => {
    for (const name of ['database_url', 'redis_url']) {
      assert.equal(config.output[name]?.[0]?.sensitive, true, `${name} is sensitive`);
    }
    for (const file of readdirSync(dir)) {
      const text = readFileSync(join(dir, file), 'utf8');
      assert.doesNotMatch(text, /\btoken\s*=|\bpassword\s*=\s*"/, `${file} holds no credential`);
    }
  });

  describe('evaluated by terraform itself (variables, locals, cloud-init; no provider)', () => {
    let module: string;
    const deployerKey =
      'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ci@deploy';
    const goodVars: Record<string, string> = {
      ssh_key_fingerprints: '["3b:16:bf:e4:8b:00:8b:b8:59:8c:a9:d3:f0:19:45:fa"]',
      deployer_ssh_public_keys: JSON.stringify([deployerKey]),
      admin_cidrs: '["203.0.113.10/32","2001:db8::/48"]',
      domain: 'example.com',
    };
    const varArgs = (vars: Record<string, string>) =>
      Object.entries(vars).flatMap(([name, value]) => ['-var', `${name}=${value}`]);
    const good = varArgs(goodVars);
    before(async () => {
      // The provider-free part of the module, laid out as in the repository so path.module works.
      module = join(work, dir);
      await mkdir(module, { recursive: true });
      for (const file of ['variables.tf', 'locals.tf', 'cloud-init.yaml.tftpl']) {
        await cp(join(dir, file), join(module, file));
      }
      await mkdir(join(work, 'deploy/server'), { recursive: true });
      await cp(bootstrapPath, join(work, bootstrapPath));
      await writeFile(join(module, 'probe.tf'), 'output "user_data" {\n  value = local.user_data\n}\n');
      const init = run('terraform', ['init', '-input=false', '-no-color', '-backend=false'], {
        cwd: module,
        env,
      });
      assert.equal(init.status, 0, init.output);
    });

    const plan = (vars: string[]) =>
      run('terraform', ['plan', '-input=false', '-no-color', '-lock=false', ...vars], { cwd: module, env });

    test('good values pass every validation rule', () => {
      const result = plan(good);
      assert.equal(result.status, 0, result.output);
    });

    test('the shipped terraform.tfvars.example passes every validation rule', () => {
      const example = resolve(dir, 'terraform.tfvars.example');
      const result = plan([`-var-file=${example}`]);
      assert.equal(result.status, 0, result.output);
    });

    const replace = (name: string, value: string) => varArgs({ ...goodVars, [name]: value });
    const refused: Array<[string, string, RegExp]> = [
      ['admin_cidrs', '["0.0.0.0/0"]', /0\.0\.0\.0\/0 or ::\/0 are refused/],
      ['admin_cidrs', '["::/0"]', /0\.0\.0\.0\/0 or ::\/0 are refused/],
      ['admin_cidrs', '[]', /needs at least one CIDR/],
      ['ssh_key_fingerprints', '[]', /at least one MD5 fingerprint/],
      ['deployer_ssh_public_keys', '["not a key"]', /OpenSSH public key line/],
      ['admin_ssh_public_keys', '["not a key"]', /must be OpenSSH public key lines/],
      ['app_count', '0', /whole number from 1 to 20/],
      ['app_count', '2.5', /whole number from 1 to 20/],
      ['droplet_image', 'debian-11-x64', /what deploy\/server\/bootstrap.sh supports/],
      ['vpc_ip_range', '8.8.0.0/16', /RFC 1918/],
      ['domain', 'Example..com', /lowercase DNS name/],
      ['postgres_version', '12', /15, 16 or 17/],
    ];
    for (const [name, value, message] of refused) {
      test(`${name}=${value} is refused with a clear message`, () => {
        const result = plan(replace(name, value));
        assert.notEqual(result.status, 0, result.output);
        assert.match(result.output.replace(/\s+/g, ' '), message);
      });
    }

    test('cloud-init writes the bootstrap byte for byte and runs it with the keys and addresses', () => {
      const apply = run('terraform', ['apply', '-auto-approve', '-input=false', '-no-color', ...good], {
        cwd: module,
        env,
      });
      assert.equal(apply.status, 0, apply.output);
      const out = run('terraform', ['output', '-raw', 'user_data'], { cwd: module, env });
      assert.equal(out.status, 0, out.output);
      assert.match(out.stdout, /^#cloud-config\n/);
      const cloudConfig = parseYaml(out.stdout) as {
        write_files: Array<{ path: string; permissions: string; encoding: string; content: string }>;
        runcmd: string[][];
      };
      const [file] = cloudConfig.write_files;
      assert.ok(file);
      assert.equal(file.permissions, '0700');
      assert.equal(Buffer.from(file.content, 'base64').toString('utf8'), readFileSync(bootstrapPath, 'utf8'));
      assert.deepEqual(cloudConfig.runcmd, [
        [
          file.path,
          '--deployer-key',
          deployerKey,
          '--ssh-from',
          '203.0.113.10/32',
          '--ssh-from',
          '2001:db8::/48',
          '--http-from',
          '10.20.0.0/20',
        ],
      ]);
      // cloud-init limits user data to 64 KiB on DigitalOcean.
      assert.ok(
        Buffer.byteLength(out.stdout) < 64 * 1024,
        `user_data is ${Buffer.byteLength(out.stdout)} bytes`,
      );
    });
  });
});
