/**
 * Redis write-through balance cache.
 *
 * Value: "<version>|<balance>|<reserved>|<updated_at_ms>" with a 60 s TTL. The
 * write is a Lua compare-and-set on the version: a writer that finished later
 * with an older version (a slow batch, a stale read-repair) can never replace
 * a newer balance. Every Redis call goes through the Redis breaker with a short
 * timeout; any failure degrades to PostgreSQL silently.
 *
 * Redis outage repair: a write that could not reach Redis leaves an older
 * value behind. Tenants whose write failed are remembered (bounded set) and
 * rewritten from PostgreSQL (a CAS write of the current version, which also fences
 * off any older writer still in flight) once Redis answers again; until then reads
 * for them skip the cache. If the set overflowed, reads bypass the cache for one
 * TTL instead, after which every stale value has expired.
 *
 * Redis Cluster: a balance key is `<prefix>balance:{<tenant>}`, hash-tagged by tenant, so tenants
 * spread over every master and each CAS script touches one key. A batch's write-through, a
 * pipeline on one server, is one CAS per tenant sent together in cluster mode (a cluster pipeline
 * must stay within one slot), and the repair deletes key by key. The near cache is OFF in cluster
 * mode (logged once at start): its coherence rests on one tracked connection and one
 * invalidation connection to the server that holds every balance key; in a cluster that would be
 * a pair per master, re-armed on every failover and resharding, and a key moving to another
 * master would leave entries nobody invalidates. Every read then costs the Redis round trip, as
 * with CREDITS_CACHE_LOCAL_ENTRIES=0. With Sentinel (one master) the near cache stays on.
 */
import type { Logger } from '../../../platform/logger';
import { isCluster, type RedisClient } from '../../../platform/redis';
import type { DependencyBreaker } from './breakers';
import type { CreditsMetrics } from '../credits-metrics';
import type { AccountBalance } from '../domain/account';
import { NearCache } from './near-cache';

const CAS_SCRIPT = `
local current = redis.call('GET', KEYS[1])
if current then
  local sep = string.find(current, '|', 1, true)
  if sep then
    local v = tonumber(string.sub(current, 1, sep - 1))
    if v and v >= tonumber(ARGV[1]) then return 0 end
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', tonumber(ARGV[3]))
return 1
`;

const DIRTY_TENANTS_MAX = 10_000;

type CasRedis = RedisClient & { creditsBalanceCas(key: string, version: string, value: string, ttl: number): Promise<number> };

export class BalanceCache {
  private readonly redis: CasRedis;
  /** Tenant → mark number, so a repair never clears a mark set after it read PostgreSQL. */
  private readonly dirty = new Map<string, number>();
  private marks = 0;
  private bypassUntilMs = 0;
  private repairing = false;
  private readonly hits: { inc(): void };
  private readonly misses: { inc(): void };
  private readonly near: NearCache | undefined;

  constructor(
    redis: RedisClient,
    private readonly breaker: DependencyBreaker,
    private readonly metrics: CreditsMetrics,
    private readonly logger: Logger,
    private readonly keyPrefix: string,
    private readonly ttlSeconds: number,
    /** Current accounts from PostgreSQL, for repairing after an outage. */
    private readonly load: (tenantIds: readonly string[]) => Promise<AccountBalance[]>,
    /** Entries of the in-process near cache; 0 turns it off (it needs a Redis that supports CLIENT TRACKING). */
    nearCacheEntries = 0,
  ) {
    this.hits = metrics.cacheRequests.labels({ result: 'hit' });
    this.misses = metrics.cacheRequests.labels({ result: 'miss' });
    if (nearCacheEntries > 0 && isCluster(redis)) {
      logger.warn('balance near cache off: Redis Cluster mode (client tracking is per node; see balance-cache.ts)');
    } else if (nearCacheEntries > 0 && !isCluster(redis)) {
      this.near = new NearCache(redis, logger, (key) => this.tenantOfKey(key), nearCacheEntries, ttlSeconds * 1000);
      this.near.start();
    }
    redis.defineCommand('creditsBalanceCas', { numberOfKeys: 1, lua: CAS_SCRIPT });
    this.redis = redis as CasRedis;
    breaker.on('close', () => void this.repair());
  }

  private key(tenantId: string): string {
    return `${this.keyPrefix}balance:{${tenantId}}`;
  }

  /** The inverse of {@link key}; undefined for any other key. */
  private tenantOfKey(key: string): string | undefined {
    const head = `${this.keyPrefix}balance:{`;
    return key.startsWith(head) && key.endsWith('}') ? key.slice(head.length, -1) : undefined;
  }

  /** The cached account, or undefined on a miss, a bypass or any Redis failure. */
  async get(tenantId: string): Promise<AccountBalance | undefined> {
    if (Date.now() < this.bypassUntilMs || this.dirty.has(tenantId)) {
      this.misses.inc();
      return undefined;
    }
    const near = this.near;
    const local = near?.get(tenantId);
    if (local) {
      this.hits.inc();
      this.metrics.nearCacheHits.inc();
      return local;
    }
    // With the near cache on, the read goes through its tracked connection so that it may keep the value.
    const ticket = near?.ticket(tenantId);
    let raw: string | null;
    try {
      raw = await this.breaker.run(() => (ticket ? near!.trackedReader : this.redis).get(this.key(tenantId)));
    } catch (error) {
      if (ticket) near!.fill(ticket, undefined);
      this.logger.debug({ err: (error as Error).message }, 'balance cache read failed: reading PostgreSQL');
      this.misses.inc();
      return undefined;
    }
    const parsed = raw === null ? undefined : parse(tenantId, raw);
    if (ticket) near!.fill(ticket, parsed);
    (parsed ? this.hits : this.misses).inc();
    return parsed;
  }

  /** Stops the near cache's connections. */
  async close(): Promise<void> {
    await this.near?.close();
  }

  /** Write-through after a commit (or read-repair after a miss); never throws. */
  async put(account: AccountBalance): Promise<void> {
    const value = encode(account);
    try {
      await this.breaker.run(() =>
        this.redis.creditsBalanceCas(this.key(account.tenantId), account.version.toString(), value, this.ttlSeconds),
      );
      // Redis answers again: rewrite whatever a failed write left stale (from PostgreSQL,
      // not from this write, which may itself be older than the failed one).
      if (this.dirty.size > 0) void this.repair();
    } catch (error) {
      this.logger.debug({ err: (error as Error).message }, 'balance cache write failed');
      this.markDirty(account.tenantId);
    } finally {
      // Before the writer's caller is answered: its next read on this replica must not see the old value.
      this.near?.forget(account.tenantId);
    }
  }

  /**
   * Write-through of several accounts (a consume batch) in ONE Redis round trip
   * (a pipeline of CAS scripts: one write, one reply); never throws. Same
   * semantics as `put` for each account.
   */
  async putMany(accounts: readonly AccountBalance[]): Promise<void> {
    if (accounts.length === 0) return;
    if (accounts.length === 1) return this.put(accounts[0]!);
    let written: boolean[];
    try {
      written = await this.casMany(accounts);
    } catch (error) {
      this.logger.debug({ err: (error as Error).message }, 'balance cache write failed');
      for (const account of accounts) this.markDirty(account.tenantId);
      return;
    }
    accounts.forEach((account, i) => {
      if (!written[i]) this.markDirty(account.tenantId);
    });
    if (written.every(Boolean) && this.dirty.size > 0) void this.repair();
  }

  /** CAS-writes the accounts in one pipeline through the breaker; which of them Redis applied or refused as older. */
  private async casMany(accounts: readonly AccountBalance[]): Promise<boolean[]> {
    try {
      const results = await this.breaker.run(() => {
        if (isCluster(this.redis)) {
          // One slot per tenant: one CAS each, sent together (no cross-slot pipeline in a cluster).
          return Promise.all(
            accounts.map((account) =>
              this.redis.creditsBalanceCas(this.key(account.tenantId), account.version.toString(), encode(account), this.ttlSeconds).then(
                (value): [Error | null, unknown] => [null, value],
                (error: unknown): [Error | null, unknown] => [error instanceof Error ? error : new Error(String(error)), undefined],
              ),
            ),
          );
        }
        const pipeline = this.redis.pipeline() as unknown as {
          creditsBalanceCas(key: string, version: string, value: string, ttl: number): void;
          exec(): Promise<[Error | null, unknown][] | null>;
        };
        for (const account of accounts) pipeline.creditsBalanceCas(this.key(account.tenantId), account.version.toString(), encode(account), this.ttlSeconds);
        return pipeline.exec();
      });
      return accounts.map((_, i) => results !== null && !results[i]?.[0]);
    } finally {
      // As in put: before the writers' callers are answered.
      if (this.near) for (const account of accounts) this.near.forget(account.tenantId);
    }
  }

  private markDirty(tenantId: string): void {
    if (this.dirty.size >= DIRTY_TENANTS_MAX) {
      this.dirty.clear();
      this.bypassUntilMs = Date.now() + this.ttlSeconds * 1000;
      return;
    }
    this.dirty.set(tenantId, ++this.marks);
  }

  /** Rewrites the keys whose write-through failed while Redis was away. */
  async repair(): Promise<void> {
    if (this.repairing || this.dirty.size === 0) return;
    this.repairing = true;
    try {
      const tenants = [...this.dirty.keys()];
      for (let i = 0; i < tenants.length; i += 500) {
        const chunk = tenants.slice(i, i + 500);
        const marks = new Map(chunk.map((t) => [t, this.dirty.get(t)]));
        const accounts = await this.load(chunk);
        const found = new Set(accounts.map((a) => a.tenantId));
        const missing = chunk.filter((t) => !found.has(t));
        if (missing.length > 0) {
          await this.breaker.run(async () => {
            if (isCluster(this.redis)) await Promise.all(missing.map((t) => this.redis.del(this.key(t)))); // one slot per key in a cluster
            else await this.redis.del(...missing.map((t) => this.key(t)));
          });
        }
        // One round trip per chunk; a key Redis did not take stays dirty for the next repair.
        const written = accounts.length > 0 ? await this.casMany(accounts) : [];
        const failed = new Set(accounts.filter((_, i) => !written[i]).map((a) => a.tenantId));
        for (const t of chunk) if (!failed.has(t) && this.dirty.get(t) === marks.get(t)) this.dirty.delete(t);
      }
    } catch (error) {
      this.logger.debug({ err: (error as Error).message }, 'balance cache repair incomplete');
    } finally {
      this.repairing = false;
    }
  }
}

/** The cached value: "<version>|<balance>|<reserved>|<updated_at_ms>" (see the file comment). */
function encode(account: AccountBalance): string {
  return `${account.version}|${account.balance}|${account.reserved}|${account.updatedAt.getTime()}`;
}

function parse(tenantId: string, raw: string): AccountBalance | undefined {
  const parts = raw.split('|');
  if (parts.length !== 4 || !parts.every((p) => /^-?[0-9]+$/.test(p))) return undefined;
  return {
    tenantId,
    version: BigInt(parts[0]!),
    balance: BigInt(parts[1]!),
    reserved: BigInt(parts[2]!),
    updatedAt: new Date(Number(parts[3]!)),
  };
}
