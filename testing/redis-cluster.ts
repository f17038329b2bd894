/**
 * A real Redis Cluster for the tests: six `redis-server --cluster-enabled yes` processes (3
 * masters + 3 replicas) on free loopback ports, joined by `redis-cli --cluster create
 * --cluster-replicas 1 --cluster-yes`, each in its own temp dir. `stop()` ends every process
 * (SIGTERM, SIGKILL after a bounded wait) and removes the dirs; a failed start does the same
 * before throwing. Also a Sentinel set-up (one master, one replica, one sentinel) for the
 * Sentinel tests. Every wait here is bounded.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from '../dev/local-servers';

const execFileAsync = promisify(execFile);
const OUTPUT_TAIL_CHARS = 4000;

/** One redis-server (or sentinel) process the kit started. */
export interface RedisNode {
  readonly port: number;
  readonly child: ChildProcess;
  /** Whether the process is still running. */
  alive(): boolean;
  /** SIGKILL, no shutdown: what a crashed host looks like to the cluster. Resolves once it exited. */
  kill(): Promise<void>;
  /** SIGTERM, SIGKILL after `graceMs`; resolves once it exited. */
  stop(graceMs?: number): Promise<void>;
}

function exitedAlready(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

async function waitExit(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (exitedAlready(child)) return true;
  return new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), timeoutMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

/** Starts `redis-server <args>` and waits for its ready line (bounded); never leaves a process behind on failure. */
async function spawnRedis(binary: string, args: readonly string[], readyLine: RegExp, readyTimeoutMs: number, port: number): Promise<RedisNode> {
  const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-OUTPUT_TAIL_CHARS);
  };
  child.stderr?.on('data', keep);
  const node: RedisNode = {
    port,
    child,
    alive: () => !exitedAlready(child),
    kill: async () => {
      if (exitedAlready(child)) return;
      child.kill('SIGKILL');
      await waitExit(child, 10_000);
    },
    stop: async (graceMs = 5_000) => {
      if (exitedAlready(child)) return;
      child.kill('SIGTERM');
      if (!(await waitExit(child, graceMs))) {
        child.kill('SIGKILL');
        await waitExit(child, 10_000);
      }
    },
  };
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${binary} on ${port} not ready within ${readyTimeoutMs} ms: ${output}`)), readyTimeoutMs);
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(new Error(`cannot start ${binary}: ${err.message}`));
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`${binary} on ${port} exited (${code ?? signal}) before it was ready: ${output}`));
      });
      child.stdout?.on('data', (chunk: Buffer) => {
        keep(chunk);
        if (readyLine.test(output)) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  } catch (error) {
    await node.kill();
    throw error;
  }
  return node;
}

/** Free loopback ports, distinct from each other (freePort alone may hand out the same one twice). */
async function freePorts(count: number): Promise<number[]> {
  const ports = new Set<number>();
  for (let attempt = 0; ports.size < count && attempt < count * 20; attempt++) ports.add(await freePort());
  if (ports.size < count) throw new Error(`could not find ${count} free ports`);
  return [...ports];
}

/** `redis-cli -p <port> <args>` (bounded), its stdout. */
export async function redisCli(port: number, args: readonly string[], timeoutMs = 10_000): Promise<string> {
  const { stdout } = await execFileAsync('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { timeout: timeoutMs });
  return stdout;
}

async function pollUntil(what: string, timeoutMs: number, probe: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      if (await probe()) return;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

export interface RedisClusterOptions {
  /** cluster-node-timeout: how long a master may be unreachable before its replica takes over (default 2000). */
  readonly nodeTimeoutMs?: number;
  readonly readyTimeoutMs?: number;
}

export interface RedisClusterRole {
  readonly port: number;
  readonly role: 'master' | 'slave';
  readonly id: string;
  /** For a replica: the id of its master. */
  readonly masterId: string | undefined;
}

export interface TestRedisCluster {
  readonly nodes: readonly RedisNode[];
  readonly nodeTimeoutMs: number;
  /** `host:port,host:port,...` of every node, as REDIS_CLUSTER_NODES takes them. */
  readonly seeds: string;
  /** Roles as the live nodes see them now (CLUSTER NODES of a live node). */
  roles(): Promise<RedisClusterRole[]>;
  /** The port serving `key`'s slot as master, per CLUSTER KEYSLOT / CLUSTER SLOTS of a live node. */
  masterPortOf(key: string): Promise<number>;
  /** Resolves when every live node reports cluster_state:ok and all slots are served (bounded). */
  waitOk(timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

/** Starts the six nodes, creates the cluster, waits until it is ok. */
export async function startRedisCluster(options: RedisClusterOptions = {}): Promise<TestRedisCluster> {
  const nodeTimeoutMs = options.nodeTimeoutMs ?? 2_000;
  const readyTimeoutMs = options.readyTimeoutMs ?? 15_000;
  const dir = mkdtempSync(join(tmpdir(), 'shieldx-redis-cluster-'));
  const nodes: RedisNode[] = [];
  const stop = async () => {
    await Promise.all(nodes.map((node) => node.stop()));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const ports = await freePorts(12);
    for (let i = 0; i < 6; i++) {
      const port = ports[i]!;
      const nodeDir = join(dir, String(port));
      mkdirSync(nodeDir);
      nodes.push(
        await spawnRedis(
          'redis-server',
          [
            '--port', String(port),
            // The bus port set explicitly: port + 10000 (the default) may be taken.
            '--cluster-port', String(ports[i + 6]!),
            '--bind', '127.0.0.1',
            '--cluster-enabled', 'yes',
            '--cluster-config-file', join(nodeDir, 'nodes.conf'),
            '--cluster-node-timeout', String(nodeTimeoutMs),
            '--dir', nodeDir,
            '--save', '',
            '--appendonly', 'no',
            '--protected-mode', 'yes',
            // A replica's first sync otherwise waits 5 s for more replicas to share it.
            '--repl-diskless-sync-delay', '0',
          ],
          /Ready to accept connections/,
          readyTimeoutMs,
          port,
        ),
      );
    }
    await execFileAsync(
      'redis-cli',
      ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', '1', '--cluster-yes'],
      { timeout: 60_000 },
    );
    const cluster = makeCluster(nodes, nodeTimeoutMs, stop);
    await cluster.waitOk(30_000);
    // Every replica attached to its master and in sync (a replica that never synced does not take over on a kill).
    await pollUntil('three replicas in sync with their masters', 30_000, async () => {
      const roles = await cluster.roles();
      const replicas = roles.filter((r) => r.role === 'slave' && r.masterId !== undefined);
      if (replicas.length !== 3 || roles.filter((r) => r.role === 'master').length !== 3) return false;
      for (const replica of replicas) {
        if (!/master_link_status:up/.test(await redisCli(replica.port, ['info', 'replication']))) return false;
      }
      return true;
    });
    return cluster;
  } catch (error) {
    await stop();
    throw error;
  }
}

function makeCluster(nodes: readonly RedisNode[], nodeTimeoutMs: number, stop: () => Promise<void>): TestRedisCluster {
  const live = () => {
    const node = nodes.find((n) => n.alive());
    if (node === undefined) throw new Error('no live cluster node');
    return node;
  };
  const roles = async (): Promise<RedisClusterRole[]> => {
    const text = await redisCli(live().port, ['cluster', 'nodes']);
    const out: RedisClusterRole[] = [];
    for (const line of text.trim().split('\n')) {
      const [id, address, flags, master] = line.split(' ');
      if (id === undefined || address === undefined || flags === undefined) continue;
      if (flags.includes('fail')) continue;
      const port = Number(address.split('@')[0]!.split(':')[1]);
      out.push({ port, id, role: flags.includes('master') ? 'master' : 'slave', masterId: master === '-' ? undefined : master });
    }
    return out;
  };
  return {
    nodes,
    nodeTimeoutMs,
    seeds: nodes.map((n) => `127.0.0.1:${n.port}`).join(','),
    roles,
    masterPortOf: async (key) => {
      const slot = Number((await redisCli(live().port, ['cluster', 'keyslot', key])).trim());
      const text = await redisCli(live().port, ['cluster', 'nodes']);
      for (const line of text.trim().split('\n')) {
        const parts = line.split(' ');
        if (!parts[2]?.includes('master') || parts[2].includes('fail')) continue;
        for (const range of parts.slice(8)) {
          const [lo, hi] = range.split('-').map(Number);
          if (lo !== undefined && slot >= lo && slot <= (hi ?? lo)) return Number(parts[1]!.split('@')[0]!.split(':')[1]);
        }
      }
      throw new Error(`no master serves slot ${slot}`);
    },
    waitOk: async (timeoutMs = 30_000) => {
      await pollUntil('cluster_state:ok on every live node', timeoutMs, async () => {
        for (const node of nodes.filter((n) => n.alive())) {
          const info = await redisCli(node.port, ['cluster', 'info']);
          if (!/cluster_state:ok/.test(info) || !/cluster_slots_ok:16384/.test(info)) return false;
        }
        return true;
      });
    },
    stop,
  };
}

export interface TestRedisSentinel {
  readonly master: RedisNode;
  readonly replica: RedisNode;
  readonly sentinel: RedisNode;
  readonly masterName: string;
  /** `host:port` of the sentinel, as REDIS_SENTINELS takes it. */
  readonly sentinels: string;
  /** The master's port as the sentinel reports it now. */
  currentMasterPort(): Promise<number>;
  stop(): Promise<void>;
}

/**
 * One master, one replica of it, one sentinel watching them (quorum 1, down-after 1 s, failover
 * timeout 5 s), each with its own temp dir. The sentinel's config file is written by the kit
 * (a sentinel rewrites it).
 */
export async function startRedisSentinel(options: { readyTimeoutMs?: number } = {}): Promise<TestRedisSentinel> {
  const readyTimeoutMs = options.readyTimeoutMs ?? 15_000;
  const dir = mkdtempSync(join(tmpdir(), 'shieldx-redis-sentinel-'));
  const started: RedisNode[] = [];
  const stop = async () => {
    await Promise.all(started.map((node) => node.stop()));
    rmSync(dir, { recursive: true, force: true });
  };
  const masterName = 'shieldx';
  try {
    const [masterPort, replicaPort, sentinelPort] = (await freePorts(3)) as [number, number, number];
    const base = (port: number) => ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--repl-diskless-sync-delay', '0'];
    const master = await spawnRedis('redis-server', base(masterPort), /Ready to accept connections/, readyTimeoutMs, masterPort);
    started.push(master);
    const replica = await spawnRedis(
      'redis-server',
      [...base(replicaPort), '--replicaof', '127.0.0.1', String(masterPort)],
      /Ready to accept connections/,
      readyTimeoutMs,
      replicaPort,
    );
    started.push(replica);
    await pollUntil('replica in sync', 20_000, async () => /master_link_status:up/.test(await redisCli(replicaPort, ['info', 'replication'])));
    const config = join(dir, 'sentinel.conf');
    writeFileSync(
      config,
      [
        `port ${sentinelPort}`,
        'bind 127.0.0.1',
        `dir ${dir}`,
        `sentinel monitor ${masterName} 127.0.0.1 ${masterPort} 1`,
        `sentinel down-after-milliseconds ${masterName} 1000`,
        `sentinel failover-timeout ${masterName} 5000`,
        `sentinel parallel-syncs ${masterName} 1`,
        '',
      ].join('\n'),
    );
    const sentinel = await spawnRedis('redis-server', [config, '--sentinel'], /Sentinel ID is|monitor master/, readyTimeoutMs, sentinelPort);
    started.push(sentinel);
    const currentMasterPort = async () =>
      Number((await redisCli(sentinelPort, ['sentinel', 'get-master-addr-by-name', masterName])).trim().split('\n')[1]);
    // The sentinel has found the replica (it fails over only to a replica it knows).
    await pollUntil('sentinel knows the replica', 20_000, async () =>
      /num-slaves\n1\n/.test(await redisCli(sentinelPort, ['sentinel', 'master', masterName])),
    );
    return { master, replica, sentinel, masterName, sentinels: `127.0.0.1:${sentinelPort}`, currentMasterPort, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}
