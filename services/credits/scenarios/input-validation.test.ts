/**
 * Bad input no other test sends, over real gRPC against real PostgreSQL and
 * Redis: each is refused with INVALID_ARGUMENT (or the documented business
 * error) naming the field, and NOTHING changes — no transaction, audit,
 * reservation or payment row, no idempotency record, balance, reserved and
 * version as they were, and the key still usable afterwards. Values exactly at
 * each limit are accepted and stored verbatim.
 */
import { randomUUID } from 'node:crypto';
import { Client } from '@grpc/grpc-js';
import { BinaryWriter } from '@bufbuild/protobuf/wire';
import { expect } from 'chai';
import {
  BatchConsumeItem,
  BatchConsumeRequest,
  type BatchConsumeResponse,
  CommitReservationRequest,
  type CommitReservationResponse,
  ConsumeRequest,
  type ConsumeResponse,
  type ListTransactionsResponse,
  type ReleaseReservationResponse,
  ReserveRequest,
  type ReserveResponse,
  TopUpRequest,
  type TopUpResponse,
  TransactionType,
  type VerifyAuditChainResponse,
} from '../../../gen/shieldx/credits/v1/credits';
import type { Duration } from '../../../gen/google/protobuf/duration';
import type { RunningService } from '../../../platform/server';
import { DEFAULT_PAGE_SIZE as PAGE_SIZE_DEFAULT, MAX_PAGE_SIZE as PAGE_SIZE_MAX } from '../../../platform/page-size';
import { Code } from '../../../platform/service-error';
import type { ErrorDetails } from '../../../platform/status-details';
import { address, bearer, insecure } from '../../../testing/harness';
import { Credits, databaseFootprint, db, failure, key, keyStored, ledgerState, payment, startCredits, tenant } from '../../../testing/credits-kit';
import {
  IDEMPOTENCY_KEY_LENGTH_MAX,
  METADATA_ENTRIES_MAX,
  METADATA_KEY_LENGTH_MAX,
  METADATA_VALUE_LENGTH_MAX,
  RESERVATION_TTL_MS_DEFAULT,
  RESERVATION_TTL_MS_MAX,
  TENANT_ID_LENGTH_MAX,
} from '../rpc/validation';

const INT64_MAX = 9_223_372_036_854_775_807n;
const INT32_MAX = 2_147_483_647;
const INT32_MIN = -2_147_483_648;

describe('credits bad input', function () {
  this.timeout(60_000);
  let service: RunningService;
  let credits: Credits;

  before(async () => {
    service = await startCredits();
    credits = new Credits(service);
  });
  after(async () => {
    credits?.close();
    await service?.shutdown();
  });

  const topUp = (tenantId: string, amount: bigint, k = key(), metadata: Record<string, string> = {}) =>
    credits.call<object, TopUpResponse>('topUp', { tenantId, amount, idempotencyKey: k, reference: 'r', payment: payment(), metadata });
  const consume = (tenantId: string, amount: bigint, k = key(), metadata: Record<string, string> = {}) =>
    credits.call<object, ConsumeResponse>('consume', { tenantId, amount, idempotencyKey: k, reference: '', metadata });
  const reserve = (tenantId: string, amount: bigint, k = key(), ttl: Duration | undefined = undefined, metadata: Record<string, string> = {}) =>
    credits.call<object, ReserveResponse>('reserve', { tenantId, amount, idempotencyKey: k, reference: '', metadata, ttl });
  const list = (q: object) => credits.call<object, ListTransactionsResponse>('listTransactions', { pageSize: 0, pageToken: '', types: [], ...q });

  /** A tenant with credits to spend. */
  async function funded(amount = 1_000n): Promise<string> {
    const t = tenant();
    await topUp(t, amount);
    return t;
  }

  /**
   * Asserts a call is refused with `code`/`reason` naming `field`, that the
   * tenant's ledger is exactly as before, and that no record holds the key.
   */
  async function refused(t: string, k: string, call: () => Promise<unknown>, field: string, what: string): Promise<void> {
    const before = await ledgerState(t);
    invalidArgument(await failure(call()), field, what);
    expect(await ledgerState(t), what).to.equal(before);
    expect(await keyStored(t, k), what).to.equal(false);
  }

  /** INVALID_ARGUMENT in the credits domain, naming exactly `field`. */
  function invalidArgument(err: ErrorDetails, field: string, what: string): void {
    expect(err.code, what).to.equal(Code.INVALID_ARGUMENT);
    expect(err.reason, what).to.equal('INVALID_ARGUMENT');
    expect(err.domain, what).to.equal('credits.shieldx.io');
    expect(err.fieldViolations.map((v) => v.field), what).to.deep.equal([field]);
    expect(err.metadata.field, what).to.equal(field);
  }

  /**
   * Asserts a call is refused with INVALID_ARGUMENT naming `field` and that
   * nothing in the whole ledger changed — any table, any tenant — for calls
   * whose tenant id is itself the bad input (no one tenant's rows to look at).
   */
  async function refusedEverywhere(call: () => Promise<unknown>, field: string, what: string): Promise<void> {
    const before = await databaseFootprint();
    invalidArgument(await failure(call()), field, what);
    expect(await databaseFootprint(), what).to.equal(before);
  }

  describe('metadata limits (Consume, TopUp, Reserve)', () => {
    /** `n` distinct keys of `keyLength` characters, each value `valueLength` characters. */
    function metadataOf(n: number, keyLength: number, valueLength: number): Record<string, string> {
      return Object.fromEntries(
        Array.from({ length: n }, (_, i) => [`${String(i).padStart(2, '0')}${'k'.repeat(keyLength - 2)}`, 'v'.repeat(valueLength)]),
      );
    }
    const atLimits = metadataOf(METADATA_ENTRIES_MAX, METADATA_KEY_LENGTH_MAX, METADATA_VALUE_LENGTH_MAX);
    const longKey = 'K'.repeat(METADATA_KEY_LENGTH_MAX + 1);
    const bad: { what: string; metadata: Record<string, string>; field: string }[] = [
      { what: 'one entry too many', metadata: metadataOf(METADATA_ENTRIES_MAX + 1, 4, 1), field: 'metadata' },
      { what: 'key one character too long', metadata: { [longKey]: 'v' }, field: `metadata[${longKey.slice(0, METADATA_KEY_LENGTH_MAX)}]` },
      { what: 'value one character too long', metadata: { route: 'v'.repeat(METADATA_VALUE_LENGTH_MAX + 1) }, field: 'metadata[route]' },
      { what: 'empty key', metadata: { '': 'v' }, field: 'metadata[]' },
      { what: 'key with a space', metadata: { 'a b': 'v' }, field: 'metadata[a b]' },
    ];

    const methods: {
      name: string;
      send: (t: string, k: string, metadata: Record<string, string>) => Promise<{ replayed: boolean }>;
    }[] = [
      { name: 'Consume', send: (t, k, m) => consume(t, 1n, k, m) },
      { name: 'TopUp', send: (t, k, m) => topUp(t, 1n, k, m) },
      { name: 'Reserve', send: (t, k, m) => reserve(t, 1n, k, undefined, m) },
    ];

    for (const method of methods) {
      // Exactly at every limit at once (32 entries, 64-character keys, 512-character values): accepted and stored verbatim.
      it(`${method.name}: accepts metadata exactly at the limits and stores it verbatim`, async () => {
        const t = await funded();
        const k = key();
        await method.send(t, k, atLimits);
        const { rows } = await db().query('SELECT metadata FROM credit_transactions WHERE tenant_id = $1 AND idempotency_key = $2', [t, k]);
        expect(rows).to.have.length(1);
        expect(rows[0].metadata).to.deep.equal(atLimits);
      });

      // One past each limit (and malformed keys): INVALID_ARGUMENT naming the field, nothing written, the key still usable.
      it(`${method.name}: refuses metadata one past each limit, names the field, writes nothing`, async () => {
        const t = await funded();
        for (const c of bad) {
          const k = key();
          await refused(t, k, () => method.send(t, k, c.metadata), c.field, c.what);
          // Validation failures are not stored: the same key now succeeds, not replayed.
          expect((await method.send(t, k, {})).replayed, c.what).to.equal(false);
        }
      });
    }

    // BatchConsume checks each item's metadata with the same limits and names the item.
    it('BatchConsume: names the item whose metadata is over a limit', async () => {
      const t = await funded();
      const k = key();
      const item = { tenantId: t, amount: 1n, reference: '', metadata: {} };
      await refused(
        t,
        k,
        () => credits.call('batchConsume', { tenantId: t, idempotencyKey: k, atomic: false, items: [item, { ...item, metadata: { route: 'v'.repeat(METADATA_VALUE_LENGTH_MAX + 1) } }] }),
        'items[1].metadata[route]',
        'item value too long',
      );
    });
  });

  describe('idempotency keys', () => {
    const badKeys: [string, string][] = [
      ['empty', ''],
      ['a space', 'has space'],
      ['only a space', ' '],
      ['a leading space', ' lead'],
      ['a trailing space', 'trail '],
      ['a tab', 'tab\tkey'],
      ['a newline', 'line\nkey'],
      ['a carriage return', 'cr\rkey'],
      ['a NUL', 'nul\u0000key'],
      ['an escape', 'esc\u001bkey'],
      ['a DEL', 'del\u007fkey'],
      ['a no-break space', 'nb\u00a0key'],
      ['a non-ASCII letter', 'café'],
      ['an emoji', 'key-\u{1f600}'],
      ['a zero-width space', 'zw\u200bkey'],
      ['one character too many', 'k'.repeat(IDEMPOTENCY_KEY_LENGTH_MAX + 1)],
    ];

    // Every mutating RPC (and GetOperation) refuses each malformed key with INVALID_ARGUMENT idempotency_key and writes nothing.
    it('refuses keys with spaces, control or non-ASCII characters, empty or over-long, on every RPC', async () => {
      const t = await funded();
      const r = await reserve(t, 5n);
      const before = await ledgerState(t);
      const item = { tenantId: t, amount: 1n, reference: '', metadata: {} };
      const rpcs: [string, (k: string) => object][] = [
        ['consume', (k) => ({ tenantId: t, amount: 1n, idempotencyKey: k, reference: '', metadata: {} })],
        ['topUp', (k) => ({ tenantId: t, amount: 1n, idempotencyKey: k, reference: '', metadata: {}, payment: payment() })],
        ['reserve', (k) => ({ tenantId: t, amount: 1n, idempotencyKey: k, reference: '', metadata: {} })],
        ['commitReservation', (k) => ({ tenantId: t, reservationId: r.reservation!.id, idempotencyKey: k })],
        ['releaseReservation', (k) => ({ tenantId: t, reservationId: r.reservation!.id, idempotencyKey: k })],
        ['batchConsume', (k) => ({ tenantId: t, idempotencyKey: k, atomic: false, items: [item] })],
        ['getOperation', (k) => ({ tenantId: t, idempotencyKey: k })],
      ];
      for (const [rpc, request] of rpcs) {
        for (const [what, k] of badKeys) {
          const err = await failure(credits.call(rpc as never, request(k)));
          expect(err.code, `${rpc}: ${what}`).to.equal(Code.INVALID_ARGUMENT);
          expect(err.fieldViolations.map((v) => v.field), `${rpc}: ${what}`).to.deep.equal(['idempotency_key']);
        }
      }
      expect(await ledgerState(t)).to.equal(before);
      const { rows } = await db().query('SELECT state::text FROM credit_reservations WHERE id = $1', [r.reservation!.id]);
      expect(rows[0].state).to.equal('HELD');
    });

    // A key exactly 128 characters long, using every printable non-space ASCII character, is accepted, stored as sent and replays.
    it('accepts a key of exactly the maximum length made of any printable ASCII', async () => {
      const t = await funded();
      const printable = Array.from({ length: 0x7e - 0x21 + 1 }, (_, i) => String.fromCharCode(0x21 + i)).join('');
      const k = printable.padEnd(IDEMPOTENCY_KEY_LENGTH_MAX, '~');
      expect(k).to.have.length(IDEMPOTENCY_KEY_LENGTH_MAX);
      const first = await consume(t, 3n, k);
      expect(first.transaction!.idempotencyKey).to.equal(k);
      expect(await keyStored(t, k)).to.equal(true);
      const again = await consume(t, 3n, k);
      expect(again.replayed).to.equal(true);
      expect(again.transaction!.id).to.equal(first.transaction!.id);
    });
  });

  describe('reservation ids (CommitReservation, ReleaseReservation)', () => {
    const malformed: [string, string][] = [
      ['empty', ''],
      ['not a UUID', 'nope'],
      ['upper case', '3F2504E0-4F89-41D3-9A0C-0305E82C3301'],
      ['no dashes', '3f2504e04f8941d39a0c0305e82c3301'],
      ['braces', '{3f2504e0-4f89-41d3-9a0c-0305e82c3301}'],
      ['one character short', '3f2504e0-4f89-41d3-9a0c-0305e82c330'],
      ['a trailing newline', '3f2504e0-4f89-41d3-9a0c-0305e82c3301\n'],
      ['SQL', "' OR '1'='1"],
    ];

    for (const rpc of ['commitReservation', 'releaseReservation'] as const) {
      // A malformed id is INVALID_ARGUMENT reservation_id; nothing is stored, so the same key then finalises a real hold.
      it(`${rpc}: refuses a malformed reservation_id and leaves the key usable`, async () => {
        const t = await funded();
        const r = await reserve(t, 10n);
        const k = key();
        for (const [what, id] of malformed) {
          await refused(t, k, () => credits.call(rpc, { tenantId: t, reservationId: id, idempotencyKey: k }), 'reservation_id', what);
        }
        const done = await credits.call<object, CommitReservationResponse | ReleaseReservationResponse>(rpc, { tenantId: t, reservationId: r.reservation!.id, idempotencyKey: k });
        expect(done.replayed).to.equal(false);
        expect(done.reservation!.id).to.equal(r.reservation!.id);
      });

      // A well-formed but unknown id is NOT_FOUND RESERVATION_NOT_FOUND; no money moves and no row but the key's is written.
      // NOT_FOUND is a stored business outcome (idempotency.ts isStorableFailure): the same key replays it and cannot be reused for another id.
      it(`${rpc}: reports an unknown reservation as RESERVATION_NOT_FOUND and moves nothing`, async () => {
        const t = await funded();
        const r = await reserve(t, 10n);
        const before = await ledgerState(t);
        const { rows: beforeRows } = await db().query('SELECT * FROM credit_reservations WHERE tenant_id = $1', [t]);
        const unknown = randomUUID();
        const k = key();
        const err = await failure(credits.call(rpc, { tenantId: t, reservationId: unknown, idempotencyKey: k }));
        expect(err.code).to.equal(Code.NOT_FOUND);
        expect(err.reason).to.equal('RESERVATION_NOT_FOUND');
        expect(err.metadata.reservation_id).to.equal(unknown);
        // Only the key's record was added; the account and every other row are as they were.
        const after = JSON.parse(await ledgerState(t));
        expect({ ...after, keys: String(Number(after.keys) - 1) }).to.deep.equal(JSON.parse(before));
        const { rows: afterRows } = await db().query('SELECT * FROM credit_reservations WHERE tenant_id = $1', [t]);
        expect(afterRows).to.deep.equal(beforeRows);
        const { rows: stored } = await db().query('SELECT state::text, error FROM credit_idempotency_keys WHERE tenant_id = $1 AND key = $2', [t, k]);
        expect(stored[0].state).to.equal('FAILED');
        expect(stored[0].error.reason).to.equal('RESERVATION_NOT_FOUND');
        const replay = await failure(credits.call(rpc, { tenantId: t, reservationId: unknown, idempotencyKey: k }));
        expect(replay.reason).to.equal('RESERVATION_NOT_FOUND');
        expect(replay.metadata.replayed).to.equal('true');
        expect((await failure(credits.call(rpc, { tenantId: t, reservationId: r.reservation!.id, idempotencyKey: k }))).reason).to.equal('IDEMPOTENCY_KEY_REUSED');
        expect(await ledgerState(t)).to.equal(JSON.stringify(after));
      });
    }
  });

  describe('Reserve TTL', () => {
    const bad: [string, Duration][] = [
      ['zero', { seconds: 0n, nanos: 0 }],
      ['negative seconds', { seconds: -1n, nanos: 0 }],
      ['negative nanos', { seconds: 0n, nanos: -1 }],
      ['negative both', { seconds: -5n, nanos: -500_000_000 }],
      ['mixed signs', { seconds: 10n, nanos: -1 }],
      ['below 1 ms (999 999 ns)', { seconds: 0n, nanos: 999_999 }],
      ['1 ns', { seconds: 0n, nanos: 1 }],
      ['24 h + 1 ms', { seconds: 86_400n, nanos: 1_000_000 }],
      ['24 h + 1 ns', { seconds: 86_400n, nanos: 1 }],
      ['24 h + 1 s', { seconds: 86_401n, nanos: 0 }],
      ['int64 max seconds', { seconds: INT64_MAX, nanos: 0 }],
      ['nanos = 1e9', { seconds: 1n, nanos: 1_000_000_000 }],
      ['nanos = int32 max', { seconds: 0n, nanos: INT32_MAX }],
      ['nanos = int32 min', { seconds: 1n, nanos: INT32_MIN }],
    ];

    // Zero, negative, sub-millisecond, over 24 hours or with nanos outside 0..999 999 999: INVALID_ARGUMENT ttl, nothing written.
    it('refuses each TTL outside 1 ms .. 24 h', async () => {
      const t = await funded();
      for (const [what, ttl] of bad) {
        const k = key();
        await refused(t, k, () => reserve(t, 1n, k, ttl), 'ttl', what);
      }
    });

    // Missing TTL: the documented default (5 minutes); exactly 1 ms and exactly 24 h are accepted and stored to the millisecond.
    it('accepts a missing TTL (default) and exactly the minimum and maximum', async () => {
      const t = await funded();
      const cases: [string, Duration | undefined, number][] = [
        ['missing', undefined, RESERVATION_TTL_MS_DEFAULT],
        ['exactly 1 ms', { seconds: 0n, nanos: 1_000_000 }, 1],
        ['exactly 24 h', { seconds: BigInt(RESERVATION_TTL_MS_MAX / 1000), nanos: 0 }, RESERVATION_TTL_MS_MAX],
        ['1.5 ms (truncated to the millisecond)', { seconds: 0n, nanos: 1_500_000 }, 1],
      ];
      for (const [what, ttl, ms] of cases) {
        const r = await reserve(t, 1n, key(), ttl);
        const res = r.reservation!;
        expect(res.expiresAt!.getTime() - res.createdAt!.getTime(), what).to.equal(ms);
        const { rows } = await db().query(
          'SELECT (extract(epoch FROM expires_at - created_at) * 1000)::bigint AS ms FROM credit_reservations WHERE id = $1',
          [res.id],
        );
        expect(rows[0].ms, what).to.equal(String(ms));
      }
    });
  });

  describe('ListTransactions paging', () => {
    let t: string;
    let other: string;
    /** 1 top-up + 51 consumes: more than one default page. */
    const TOTAL = PAGE_SIZE_DEFAULT + 2;

    before(async () => {
      t = await funded(1_000n);
      other = await funded(1_000n);
      const items = Array.from({ length: TOTAL - 1 }, () => ({ tenantId: t, amount: 1n, reference: '', metadata: {} }));
      const res = await credits.call<object, BatchConsumeResponse>('batchConsume', { tenantId: t, idempotencyKey: key(), atomic: true, items });
      expect(res.succeeded).to.equal(TOTAL - 1);
    });

    // page_size follows the mesh's rule (AIP-158, platform/page-size.ts): 0 means the default (50), 1..500 are honoured,
    // above 500 is served as 500 (not an error), negative is INVALID_ARGUMENT naming page_size.
    it('honours page_size 0 (default), 1 and the maximum; coerces above the maximum; refuses negative', async () => {
      const byDefault = await list({ tenantId: t });
      expect(byDefault.transactions).to.have.length(PAGE_SIZE_DEFAULT);
      expect(byDefault.nextPageToken).not.to.equal('');
      const one = await list({ tenantId: t, pageSize: 1 });
      expect(one.transactions).to.have.length(1);
      const max = await list({ tenantId: t, pageSize: PAGE_SIZE_MAX });
      expect(max.transactions).to.have.length(TOTAL);
      expect(max.nextPageToken).to.equal('');
      // More rows than the maximum page: 1 top-up + 6 x 100 consumes.
      const big = await funded(1_000n);
      for (let i = 0; i < 6; i++) {
        const items = Array.from({ length: 100 }, () => ({ tenantId: big, amount: 1n, reference: '', metadata: {} }));
        await credits.call<object, BatchConsumeResponse>('batchConsume', { tenantId: big, idempotencyKey: key(), atomic: true, items });
      }
      for (const pageSize of [PAGE_SIZE_MAX, PAGE_SIZE_MAX + 1, INT32_MAX]) {
        const page = await list({ tenantId: big, pageSize });
        expect(page.transactions, String(pageSize)).to.have.length(PAGE_SIZE_MAX);
        expect(page.nextPageToken, String(pageSize)).not.to.equal('');
      }
      for (const pageSize of [-1, INT32_MIN]) {
        const err = await failure(list({ tenantId: t, pageSize }));
        expect(err.code, String(pageSize)).to.equal(Code.INVALID_ARGUMENT);
        expect(err.fieldViolations.map((v) => v.field)).to.deep.equal(['page_size']);
      }
    });

    // A token is bound to its filter (tenant, time range, type set): replayed with any other filter it is refused; reordered types and another page size are the same query.
    it('refuses a page token from a different filter', async () => {
      const first = await list({ tenantId: t, pageSize: 2, types: [TransactionType.TRANSACTION_TYPE_CONSUME] });
      const token = first.nextPageToken;
      expect(token).not.to.equal('');
      const others: [string, object][] = [
        ['no type filter', { tenantId: t, types: [] }],
        ['another type', { tenantId: t, types: [TransactionType.TRANSACTION_TYPE_TOP_UP] }],
        ['an extra type', { tenantId: t, types: [TransactionType.TRANSACTION_TYPE_CONSUME, TransactionType.TRANSACTION_TYPE_TOP_UP] }],
        ['another tenant', { tenantId: other, types: [TransactionType.TRANSACTION_TYPE_CONSUME] }],
        ['a start time', { tenantId: t, types: [TransactionType.TRANSACTION_TYPE_CONSUME], startTime: new Date(0) }],
        ['an end time', { tenantId: t, types: [TransactionType.TRANSACTION_TYPE_CONSUME], endTime: new Date(Date.now() + 3_600_000) }],
      ];
      for (const [what, q] of others) {
        const err = await failure(list({ pageSize: 2, ...q, pageToken: token }));
        expect(err.code, what).to.equal(Code.INVALID_ARGUMENT);
        expect(err.fieldViolations.map((v) => v.field), what).to.deep.equal(['page_token']);
      }
      const twoTypes = await list({ tenantId: t, pageSize: 2, types: [TransactionType.TRANSACTION_TYPE_TOP_UP, TransactionType.TRANSACTION_TYPE_CONSUME] });
      const reordered = await list({ tenantId: t, pageSize: 2, pageToken: twoTypes.nextPageToken, types: [TransactionType.TRANSACTION_TYPE_CONSUME, TransactionType.TRANSACTION_TYPE_TOP_UP] });
      expect(reordered.transactions).to.have.length(2);
      const otherSize = await list({ tenantId: t, pageSize: 5, pageToken: token, types: [TransactionType.TRANSACTION_TYPE_CONSUME] });
      expect(otherSize.transactions).to.have.length(5);
      expect(otherSize.transactions[0]!.id).not.to.be.oneOf(first.transactions.map((x) => x.id));
    });

    // Oversized, truncated, re-encoded with another fingerprint/version/sequence, or not a JSON object: INVALID_ARGUMENT page_token, never INTERNAL.
    it('refuses oversized and tampered page tokens', async () => {
      const page = await list({ tenantId: t, pageSize: 2 });
      const token = page.nextPageToken;
      const decoded = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as { v: number; c: string[]; f: string };
      const encode = (value: unknown) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');
      const tampered: [string, string][] = [
        ['513 characters', 'A'.repeat(513)],
        ['a real token padded past 512', token + 'A'.repeat(513 - token.length)],
        ['truncated', token.slice(0, -4)],
        ['standard base64 padding', `${token}==`],
        ['non-base64url characters', token.replace(/^./, '+')],
        ['another fingerprint', encode({ ...decoded, f: '0123456789abcdef' })],
        ['another version (v1, unauthenticated)', encode({ ...decoded, v: 1 })],
        ['sequence 0', encode({ ...decoded, c: ['0'] })],
        ['negative sequence', encode({ ...decoded, c: ['-1'] })],
        ['leading zero', encode({ ...decoded, c: [`0${decoded.c[0]}`] })],
        ['sequence above int64', encode({ ...decoded, c: ['9223372036854775808'] })],
        ['sequence as a number', encode({ ...decoded, c: [Number(decoded.c[0])] })],
        ['JSON null', encode('null')],
        ['JSON array', encode('[1]')],
        ['JSON string', encode('"x"')],
        ['not JSON', encode('{v:1')],
      ];
      for (const [what, pageToken] of tampered) {
        const err = await failure(list({ tenantId: t, pageSize: 2, pageToken }));
        expect(err.code, what).to.equal(Code.INVALID_ARGUMENT);
        expect(err.fieldViolations.map((v) => v.field), what).to.deep.equal(['page_token']);
      }
    });

    // Tokens are authenticated (issue 21): one re-encoded with another position but the right fingerprint is refused.
    it('refuses a re-positioned token', async () => {
      const page = await list({ tenantId: t, pageSize: 2 });
      const decoded = JSON.parse(Buffer.from(page.nextPageToken, 'base64url').toString('utf8')) as { v: number; c: string[]; f: string };
      const forged = Buffer.from(JSON.stringify({ ...decoded, c: ['9223372036854775807'] })).toString('base64url');
      const err = await failure(list({ tenantId: t, pageSize: PAGE_SIZE_MAX, pageToken: forged }));
      expect(err.code).to.equal(Code.INVALID_ARGUMENT);
      expect(err.fieldViolations.map((v) => v.field)).to.deep.equal(['page_token']);
    });
  });

  describe('tenant ids and amounts on every RPC', () => {
    /** A funded tenant holding `held`: the valid half of every request below. */
    let t: string;
    let held: string;
    /** A funded tenant whose id is exactly the maximum length: the over-long bad id below is it plus one character. */
    let longest: string;
    let badTenants: [string, string][];

    before(async () => {
      t = await funded();
      held = (await reserve(t, 10n)).reservation!.id;
      longest = tenant().padEnd(TENANT_ID_LENGTH_MAX, 'x');
      await topUp(longest, 1_000n);
      badTenants = [
        ['empty', ''],
        // A server that truncated instead of refusing would write to `longest`'s account.
        ['one character too long', `${longest}x`],
        ['a space', 'bad tenant'],
        ['a leading dash', '-tenant'],
        ['a non-ASCII letter', 'café'],
      ];
    });

    const item = (tenantId: string, amount = 1n) => ({ tenantId, amount, reference: '', metadata: {} });
    const tenantRpcs: { name: string; method: string; field: string; request: (bad: string) => object }[] = [
      { name: 'TopUp', method: 'topUp', field: 'tenant_id', request: (bad) => ({ tenantId: bad, amount: 1n, idempotencyKey: key(), reference: '', payment: payment(), metadata: {} }) },
      { name: 'Consume', method: 'consume', field: 'tenant_id', request: (bad) => ({ tenantId: bad, amount: 1n, idempotencyKey: key(), reference: '', metadata: {} }) },
      { name: 'Reserve', method: 'reserve', field: 'tenant_id', request: (bad) => ({ tenantId: bad, amount: 1n, idempotencyKey: key(), reference: '', metadata: {} }) },
      { name: 'CommitReservation', method: 'commitReservation', field: 'tenant_id', request: (bad) => ({ tenantId: bad, reservationId: held, idempotencyKey: key() }) },
      { name: 'ReleaseReservation', method: 'releaseReservation', field: 'tenant_id', request: (bad) => ({ tenantId: bad, reservationId: held, idempotencyKey: key() }) },
      {
        name: 'BatchConsume (request tenant)',
        method: 'batchConsume',
        field: 'tenant_id',
        request: (bad) => ({ tenantId: bad, idempotencyKey: key(), atomic: false, items: [item(t)] }),
      },
      {
        name: 'BatchConsume (item tenant)',
        method: 'batchConsume',
        field: 'items[1].tenant_id',
        request: (bad) => ({ tenantId: t, idempotencyKey: key(), atomic: false, items: [item(t), item(bad)] }),
      },
      { name: 'GetBalance', method: 'getBalance', field: 'tenant_id', request: (bad) => ({ tenantId: bad, consistentRead: true }) },
      { name: 'ListTransactions', method: 'listTransactions', field: 'tenant_id', request: (bad) => ({ tenantId: bad, pageSize: 0, pageToken: '', types: [] }) },
      { name: 'GetOperation', method: 'getOperation', field: 'tenant_id', request: (bad) => ({ tenantId: bad, idempotencyKey: key() }) },
      // An empty tenant_id is "every tenant" here (service.ts), not bad input: see the test after this loop.
      { name: 'VerifyAuditChain', method: 'verifyAuditChain', field: 'tenant_id', request: (bad) => ({ tenantId: bad }) },
    ];

    for (const rpc of tenantRpcs) {
      // Empty (except VerifyAuditChain), 129 characters, or outside [A-Za-z0-9._:@-] / not starting with a letter or digit:
      // INVALID_ARGUMENT naming the tenant field, and not one row written or changed anywhere in the ledger.
      it(`${rpc.name}: refuses each bad tenant id, names ${rpc.field}, writes nothing anywhere`, async () => {
        for (const [what, bad] of badTenants) {
          if (rpc.method === 'verifyAuditChain' && bad === '') continue;
          await refusedEverywhere(() => credits.call(rpc.method as never, rpc.request(bad)), rpc.field, `${rpc.name}: ${what}`);
        }
        // The tenant at exactly the maximum length was accepted and is untouched; the hold is still held.
        expect((await credits.call<object, { account?: { balance: bigint } }>('getBalance', { tenantId: longest, consistentRead: true })).account!.balance).to.equal(1_000n);
        const { rows } = await db().query('SELECT state::text FROM credit_reservations WHERE id = $1', [held]);
        expect(rows[0].state).to.equal('HELD');
      });
    }

    // VerifyAuditChain's empty tenant_id means every tenant: accepted, and it covers more than one tenant.
    it('VerifyAuditChain: an empty tenant id verifies every tenant rather than being refused', async () => {
      const all = await credits.call<object, VerifyAuditChainResponse>('verifyAuditChain', { tenantId: '' });
      expect(all.tenantsChecked >= 2n).to.equal(true);
    });

    const INT64_OVER = INT64_MAX + 1n;
    const UINT64_MAX = 2n ** 64n - 1n;
    /** A varint field `fieldNumber` holding `value` as uint64: what a client without int64 checks can put on the wire. */
    const rawVarint = (fieldNumber: number, value: bigint) => new BinaryWriter().uint32(fieldNumber << 3).uint64(value).finish();
    /** Sends request bytes as they are: the generated client refuses to serialise an amount above int64, the wire does not. */
    function rawCall(method: string, bytes: Uint8Array): Promise<unknown> {
      const raw = new Client(address(service), insecure);
      return new Promise((resolve, reject) =>
        raw.makeUnaryRequest(`/shieldx.credits.v1.CreditsService/${method}`, (b: Buffer) => b, (b: Buffer) => b, Buffer.from(bytes), bearer(), (e, r) => (e ? reject(e) : resolve(r))),
      ).finally(() => raw.close());
    }

    /**
     * Every mutating RPC that carries an amount. `raw(k, value)` encodes a valid request whose
     * amount (1) is then overridden on the wire by `value` (the last occurrence of a field wins):
     * were the override lost, the request would succeed and the test fail.
     */
    const amountRpcs: { name: string; method: string; field: string; bad: bigint[]; request: (k: string, amount: bigint) => object; raw: (k: string, value: bigint) => Uint8Array }[] = [
      {
        name: 'TopUp',
        method: 'topUp',
        field: 'amount',
        bad: [0n, -1n],
        request: (k, amount) => ({ tenantId: t, amount, idempotencyKey: k, reference: '', payment: payment(), metadata: {} }),
        raw: (k, value) => Buffer.concat([TopUpRequest.encode({ tenantId: t, amount: 1n, idempotencyKey: k, reference: '', payment: payment(), metadata: {} }).finish(), rawVarint(2, value)]),
      },
      {
        name: 'Consume',
        method: 'consume',
        field: 'amount',
        bad: [0n, -1n],
        request: (k, amount) => ({ tenantId: t, amount, idempotencyKey: k, reference: '', metadata: {} }),
        raw: (k, value) => Buffer.concat([ConsumeRequest.encode({ tenantId: t, amount: 1n, idempotencyKey: k, reference: '', metadata: {} }).finish(), rawVarint(2, value)]),
      },
      {
        name: 'Reserve',
        method: 'reserve',
        field: 'amount',
        bad: [0n, -1n],
        request: (k, amount) => ({ tenantId: t, amount, idempotencyKey: k, reference: '', metadata: {} }),
        raw: (k, value) => Buffer.concat([ReserveRequest.encode({ tenantId: t, amount: 1n, idempotencyKey: k, reference: '', metadata: {} }).finish(), rawVarint(2, value)]),
      },
      {
        // amount is optional here and 0 is a valid capture (take nothing, release the whole hold): only negatives are bad.
        name: 'CommitReservation',
        method: 'commitReservation',
        field: 'amount',
        bad: [-1n],
        request: (k, amount) => ({ tenantId: t, reservationId: held, amount, idempotencyKey: k }),
        raw: (k, value) => Buffer.concat([CommitReservationRequest.encode({ tenantId: t, reservationId: held, amount: 1n, idempotencyKey: k }).finish(), rawVarint(3, value)]),
      },
      {
        // The second item is the bad one: the error names its index, and the valid first item is not applied either.
        name: 'BatchConsume',
        method: 'batchConsume',
        field: 'items[1].amount',
        bad: [0n, -1n],
        request: (k, amount) => ({ tenantId: t, idempotencyKey: k, atomic: false, items: [item(t), item(t, amount)] }),
        raw: (k, value) =>
          Buffer.concat([
            BatchConsumeRequest.encode({ tenantId: t, idempotencyKey: k, atomic: false, items: [item(t)] }).finish(),
            // items (field 1) appended: a second item whose amount 1 is overridden by `value`.
            new BinaryWriter().uint32((1 << 3) | 2).bytes(Buffer.concat([BatchConsumeItem.encode(item(t)).finish(), rawVarint(2, value)])).finish(),
          ]),
      },
    ];

    for (const rpc of amountRpcs) {
      // Zero and negative amounts, and amounts above int64 sent as raw bytes (they arrive wrapped to negative):
      // INVALID_ARGUMENT naming the amount field, nothing written anywhere, the key left unused.
      it(`${rpc.name}: refuses ${rpc.bad.join(', ')} and over-int64 amounts, names ${rpc.field}, writes nothing anywhere`, async () => {
        for (const amount of rpc.bad) {
          const k = key();
          await refusedEverywhere(() => credits.call(rpc.method as never, rpc.request(k, amount)), rpc.field, `${rpc.name}: ${amount}`);
          expect(await keyStored(t, k)).to.equal(false);
        }
        // The generated client will not even serialise these: only raw bytes reach the server.
        expect((await failure(credits.call(rpc.method as never, rpc.request(key(), INT64_OVER)))).message).to.match(/serializ/i);
        for (const value of [INT64_OVER, UINT64_MAX]) {
          const k = key();
          await refusedEverywhere(() => rawCall(rpc.name, rpc.raw(k, value)), rpc.field, `${rpc.name}: raw ${value}`);
          expect(await keyStored(t, k)).to.equal(false);
        }
        const { rows } = await db().query('SELECT state::text FROM credit_reservations WHERE id = $1', [held]);
        expect(rows[0].state).to.equal('HELD');
      });
    }
  });

  // Text PostgreSQL cannot store (NUL) in reference or metadata: INVALID_ARGUMENT naming the field, not INTERNAL after a database round trip.
  it('refuses NUL characters in reference and metadata', async () => {
    const t = await funded();
    const cases: [string, string, (k: string) => Promise<unknown>][] = [
      ['consume metadata value', 'metadata.route', (k) => consume(t, 1n, k, { route: 'a\u0000b' })],
      ['topUp metadata value', 'metadata.route', (k) => topUp(t, 1n, k, { route: 'a\u0000b' })],
      ['reserve metadata value', 'metadata.route', (k) => reserve(t, 1n, k, undefined, { route: 'a\u0000b' })],
      ['consume reference', 'reference', (k) => credits.call('consume', { tenantId: t, amount: 1n, idempotencyKey: k, reference: 'a\u0000b', metadata: {} })],
      ['reserve reference', 'reference', (k) => credits.call('reserve', { tenantId: t, amount: 1n, idempotencyKey: k, reference: 'a\u0000b', metadata: {} })],
      [
        'batch item reference',
        'items[0].reference',
        (k) => credits.call('batchConsume', { tenantId: t, idempotencyKey: k, atomic: false, items: [{ tenantId: t, amount: 1n, reference: '\u0000', metadata: {} }] }),
      ],
    ];
    for (const [what, field, send] of cases) {
      const k = key();
      await refused(t, k, () => send(k), field, what);
    }
    // Other control characters are valid text and round-trip.
    const ok = await consume(t, 1n, key(), { route: 'tab\there\nnewline' });
    expect(ok.transaction!.metadata).to.deep.equal({ route: 'tab\there\nnewline' });
  });
});
