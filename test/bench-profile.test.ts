import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { budgetTable, profileBudget } from '../bench/lib/profile.js';

const nm = 'file:///srv/app/node_modules';
const dist = 'file:///srv/app/dist';

/**
 * A V8 .cpuprofile: each stack (root first) gets one node chain and `samples` samples of 1 ms.
 * Stacks are [url, functionName] frames.
 */
function cpuProfile(stacks: ReadonlyArray<{ frames: ReadonlyArray<[string, string]>; samples: number }>) {
  const nodes = [{ id: 1, callFrame: { functionName: '(root)', url: '' }, children: [] as number[] }];
  const samples: number[] = [];
  for (const { frames, samples: count } of stacks) {
    let parent = nodes[0];
    for (const [url, functionName] of frames) {
      const node = { id: nodes.length + 1, callFrame: { functionName, url }, children: [] as number[] };
      parent?.children.push(node.id);
      nodes.push(node);
      parent = node;
    }
    for (let i = 0; i < count; i++) samples.push(parent?.id ?? 1);
  }
  return {
    nodes,
    samples,
    timeDeltas: [0, ...samples.map(() => 1000)],
    startTime: 0,
    endTime: samples.length * 1000,
  };
}

describe('CPU profile budget (bench/lib/profile.ts)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'shipshape-profile-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  const write = (profile: unknown) => {
    const file = join(dir, `${Math.random().toString(36).slice(2)}.cpuprofile`);
    writeFileSync(file, JSON.stringify(profile));
    return file;
  };

  test('socket work under a database or Redis client is that client’s; under a reply, Node HTTP’s', () => {
    const socketWrite: Array<[string, string]> = [
      ['node:internal/streams/writable', 'Writable.uncork'],
      ['node:net', 'Socket._writev'],
      ['', 'writev'],
    ];
    const file = write(
      cpuProfile([
        // pg sending a query for the handler: its writev is the database round trip's.
        {
          frames: [
            [`${dist}/modules/orders/orders.service.js`, 'placeOrder'],
            [`${nm}/kysely/dist/esm/driver/runtime-driver.js`, 'executeQuery'],
            [`${nm}/pg/lib/query.js`, 'submit'],
            ...socketWrite,
          ],
          samples: 30,
        },
        // ioredis writing a command.
        { frames: [[`${nm}/ioredis/built/Redis.js`, 'sendCommand'], ...socketWrite], samples: 10 },
        // Fastify ending a reply: Node's HTTP.
        {
          frames: [
            [`${nm}/fastify/lib/reply.js`, 'writePayload'],
            ['node:_http_outgoing', 'end'],
            ...socketWrite,
          ],
          samples: 20,
        },
        // JSON.stringify inside pino: the log line, not "other".
        {
          frames: [
            [`${nm}/pino/lib/tools.js`, 'asJson'],
            ['', 'stringify'],
          ],
          samples: 15,
        },
        { frames: [['', '(garbage collector)']], samples: 5 },
        { frames: [['', '(idle)']], samples: 100 },
      ]),
    );
    const budget = profileBudget(file, 10);
    const us = Object.fromEntries(budget.rows.map((r) => [r.part, r.us]));
    assert.deepEqual(us, {
      'database (pg, kysely, SQLite)': 3000,
      'Node HTTP parsing and socket I/O': 2000,
      'log line': 1500,
      'Redis client': 1000,
      'garbage collection': 500,
    });
    // Idle samples are left out of the busy time and of every share.
    assert.equal(budget.busyMs, 80);
    assert.equal(budget.windowMs, 180);
    assert.equal(budget.rows[0]?.share, 30 / 80);

    const table = budgetTable(budget, 160);
    assert.match(table, /\| database \(pg, kysely, SQLite\) \| 38% \| 60\.0 \|/);
    assert.match(table, /\| Node HTTP parsing and socket I\/O \| 25% \| 40\.0 \|/);
    assert.match(table, /\| \*\*total\*\* \| 100% \| \*\*160\.0\*\* \|/);
  });
});
