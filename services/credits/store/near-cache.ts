/**
 * In-process near cache of balances, kept coherent by Redis server-assisted
 * client-side caching (CLIENT TRACKING, Redis >= 6).
 *
 * Why: a cached GetBalance otherwise costs a Redis round trip, and on a busy
 * host the wake-ups of a third process (Redis) are where its tail comes from.
 *
 * How it stays correct:
 *  - Reads that may fill it go through a dedicated `reader` connection with
 *    tracking on, redirected to a `subscriber` connection listening on
 *    `__redis__:invalidate`. Once the reader has read a key, Redis sends one
 *    invalidation when anything changes it (any replica's write-through, a
 *    delete, expiry, eviction; a flush or a tracking-table overflow sends a
 *    flush-everything message).
 *  - An invalidation can overtake the reply of a GET in flight (they travel on
 *    two connections). Each fill carries a ticket; an invalidation of the key,
 *    a flush or a lost connection voids the tickets issued before it, so a value
 *    read before a change is never kept after it.
 *  - This replica's own write-throughs drop the tenant's entry and void its
 *    tickets once Redis has the new value, before the write's caller is
 *    answered: a caller's next read on this replica sees its own write.
 *  - If either connection drops, everything is dropped and nothing is kept
 *    until both are back and tracking is on again (invalidations may have
 *    been missed in between).
 *  - A connection can also go silent without closing (a partition, a hung
 *    server). The subscriber is PINGed every second; a PONG proves every
 *    invalidation sent before it has arrived (one connection, in order). An
 *    entry is served only while the last PONG is recent (3 s), and a PING
 *    unanswered that long reconnects the subscriber.
 *  - Entries also expire after the Redis TTL, and the entry count is bounded
 *    (oldest first out).
 * Other replicas see a write once its invalidation arrives: the same order of
 * staleness as the Redis cache itself, which is written after the commit.
 */
import type { Logger } from '../../../platform/logger';
import type Redis from 'ioredis';
import type { AccountBalance } from '../domain/account';

const INVALIDATE_CHANNEL = '__redis__:invalidate';

export interface NearCacheTiming {
  /** How often the subscriber is PINGed. */
  readonly pingEveryMs: number;
  /** Entries are served only while a PING sent at most this long ago has been answered. */
  readonly silenceMaxMs: number;
}

const DEFAULT_TIMING: NearCacheTiming = { pingEveryMs: 1_000, silenceMaxMs: 3_000 };

interface Entry {
  readonly account: AccountBalance;
  readonly expiresAtMs: number;
}

/** A read in flight that may fill the cache: voided if anything about its tenant changes before it returns. */
export interface FillTicket {
  readonly tenantId: string;
  voided: boolean;
}

export class NearCache {
  private readonly entries = new Map<string, Entry>();
  /** Reads in flight per tenant (bounded by the reads in flight). */
  private readonly inFlight = new Map<string, Set<FillTicket>>();
  private readonly reader: Redis;
  private readonly subscriber: Redis;
  /** The subscriber's client id while it is subscribed to the invalidation channel. */
  private subscriberId: number | undefined;
  private trackingOn = false;
  private closed = false;
  /** Set-up steps run one at a time (a 'ready' of each connection can come together). */
  private setup: Promise<void> = Promise.resolve();
  /** When the last answered PING was sent: every invalidation from before then has arrived. */
  private confirmedAtMs = 0;
  /** When the PING in flight was sent (0: none). */
  private pingSentAtMs = 0;
  private readonly pinger: NodeJS.Timeout;

  constructor(
    redis: Redis,
    private readonly logger: Logger,
    /** Maps a Redis key back to its tenant (undefined: not a balance key). */
    private readonly tenantOfKey: (key: string) => string | undefined,
    private readonly maxEntries: number,
    private readonly ttlMs: number,
    private readonly timing: NearCacheTiming = DEFAULT_TIMING,
  ) {
    // Both connections reconnect by themselves. The subscriber does not re-subscribe by itself: its
    // client id, which the reader's tracking names, changes with every connection and is read first.
    this.reader = redis.duplicate({ lazyConnect: true, connectionName: 'credits-balance-reader' });
    this.subscriber = redis.duplicate({ lazyConnect: true, autoResubscribe: false, connectionName: 'credits-balance-invalidations' });
    // Both inherit the client's socket timeout (platform/redis.ts): a reader that stops answering is
    // replaced, and tracking set up again. The subscriber has its own PING besides (see ping()).
    for (const connection of [this.reader, this.subscriber]) {
      // Failures reach callers through the breaker and the main client's log.
      connection.on('error', () => undefined);
      connection.on('close', () => {
        if (connection === this.subscriber) this.subscriberId = undefined;
        this.lost();
      });
    }
    this.subscriber.on('ready', () => this.step(() => this.subscribe()));
    this.reader.on('ready', () => this.step(() => this.track()));
    this.subscriber.on('messageBuffer', (channel: Buffer, keys: Buffer[] | Buffer | null) => {
      if (channel.toString() === INVALIDATE_CHANNEL) this.invalidated(keys);
    });
    this.pinger = setInterval(() => this.ping(), timing.pingEveryMs);
    this.pinger.unref();
  }

  /** Connects both connections; the cache fills once tracking is on (never throws). */
  start(): void {
    void this.reader.connect().catch(() => undefined);
    void this.subscriber.connect().catch(() => undefined);
  }

  /** Whether reads may fill the cache (both connections up, tracking on). */
  get enabled(): boolean {
    return this.trackingOn;
  }

  /** The Redis client id of the invalidation connection while it is subscribed (CLIENT LIST / CLIENT KILL ID). */
  get subscriberClientId(): number | undefined {
    return this.subscriberId;
  }

  /** The connection a filling read must use (its reads are the tracked ones). */
  get trackedReader(): Redis {
    return this.reader;
  }

  get(tenantId: string): AccountBalance | undefined {
    const entry = this.entries.get(tenantId);
    if (!entry) return undefined;
    const now = Date.now();
    // Silent subscriber: invalidations may be held up somewhere; serve nothing until a PONG catches up.
    if (now - this.confirmedAtMs > this.timing.silenceMaxMs) return undefined;
    if (now >= entry.expiresAtMs) {
      this.entries.delete(tenantId);
      return undefined;
    }
    return entry.account;
  }

  /**
   * A ticket for a read about to go through {@link trackedReader}, or undefined when the cache is
   * off. Every ticket must be settled with {@link fill}.
   */
  ticket(tenantId: string): FillTicket | undefined {
    if (!this.trackingOn) return undefined;
    const ticket: FillTicket = { tenantId, voided: false };
    let tickets = this.inFlight.get(tenantId);
    if (!tickets) this.inFlight.set(tenantId, (tickets = new Set()));
    tickets.add(ticket);
    return ticket;
  }

  /** Settles a ticket: keeps what its read returned (if anything) unless the ticket was voided meanwhile. */
  fill(ticket: FillTicket, account: AccountBalance | undefined): void {
    const tickets = this.inFlight.get(ticket.tenantId);
    if (tickets?.delete(ticket) && tickets.size === 0) this.inFlight.delete(ticket.tenantId);
    if (ticket.voided || account === undefined || !this.trackingOn) return;
    if (this.entries.size >= this.maxEntries && !this.entries.has(ticket.tenantId)) {
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) this.entries.delete(oldest);
    }
    this.entries.set(ticket.tenantId, { account, expiresAtMs: Date.now() + this.ttlMs });
  }

  /** Drops a tenant and voids its reads in flight (its value changed). */
  forget(tenantId: string): void {
    this.entries.delete(tenantId);
    const tickets = this.inFlight.get(tenantId);
    if (!tickets) return;
    for (const ticket of tickets) ticket.voided = true;
    this.inFlight.delete(tenantId);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.pinger);
    this.lost();
    this.reader.disconnect();
    this.subscriber.disconnect();
    await this.setup;
  }

  private flush(): void {
    this.entries.clear();
    for (const tickets of this.inFlight.values()) for (const ticket of tickets) ticket.voided = true;
    this.inFlight.clear();
  }

  private lost(): void {
    if (this.trackingOn && !this.closed) this.logger.warn('balance near cache off: a tracking connection to Redis closed');
    this.trackingOn = false;
    this.flush();
  }

  private invalidated(keys: Buffer[] | Buffer | null): void {
    // A null (or non-array) payload means "everything": FLUSHALL, FLUSHDB or a tracking-table overflow.
    if (!Array.isArray(keys)) return this.flush();
    for (const key of keys) {
      const tenantId = this.tenantOfKey(key.toString());
      if (tenantId !== undefined) this.forget(tenantId);
    }
  }

  private ping(): void {
    if (!this.trackingOn) return;
    const now = Date.now();
    if (this.pingSentAtMs !== 0) {
      if (now - this.pingSentAtMs <= this.timing.silenceMaxMs) return;
      // Unanswered too long: the connection is as good as lost. Reconnecting re-arms tracking.
      this.logger.warn({ silent_ms: now - this.pingSentAtMs }, 'balance near cache: Redis invalidation connection silent, reconnecting');
      this.pingSentAtMs = 0;
      this.subscriber.disconnect(true);
      return;
    }
    this.pingSentAtMs = now;
    this.subscriber.ping().then(
      () => {
        if (this.pingSentAtMs !== now) return;
        this.confirmedAtMs = now;
        this.pingSentAtMs = 0;
      },
      () => undefined, // a failed PING means a closed connection, handled by 'close'
    );
  }

  private step(fn: () => Promise<void>): void {
    this.setup = this.setup.then(fn).catch((error: unknown) => {
      // E.g. a Redis before 6, or a proxy that does not pass CLIENT TRACKING: stay off until the next reconnect.
      if (!this.closed) this.logger.warn({ err: (error as Error).message }, 'balance near cache off: Redis client tracking unavailable');
    });
  }

  private async subscribe(): Promise<void> {
    if (this.closed || this.subscriber.status !== 'ready') return;
    // Read before SUBSCRIBE: a subscribed connection takes only (UN)SUBSCRIBE and PING.
    const id = (await this.subscriber.client('ID')) as number;
    await this.subscriber.subscribe(INVALIDATE_CHANNEL);
    this.subscriberId = id;
    await this.track();
  }

  /** Points the reader's tracking at the subscriber; the cache is on once Redis has accepted it. */
  private async track(): Promise<void> {
    const id = this.subscriberId;
    if (this.closed || id === undefined || this.reader.status !== 'ready') return;
    await this.reader.client('TRACKING', 'ON', 'REDIRECT', String(id));
    if (this.closed || this.subscriberId !== id || this.reader.status !== 'ready') return;
    // Anything read before tracking was on is not covered by invalidations: start empty.
    this.flush();
    this.confirmedAtMs = Date.now();
    this.pingSentAtMs = 0;
    this.trackingOn = true;
    this.logger.info('balance near cache on (Redis client tracking)');
  }
}
