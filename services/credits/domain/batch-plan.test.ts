/**
 * The ledger's rules, with no I/O: no database, no Redis, no service. A plan is given account
 * states and operations and must produce exactly the movements, audit rows, account heads and
 * business errors the ledger writes or answers.
 */
import { expect } from 'chai';
import { InvariantError } from '../../../platform/invariant';
import { type AccountState, INT64_MAX } from './account';
import { AuditChain } from './audit-chain';
import { BatchPlan, type ConsumeOperation, planBatchConsume, planConsumes, planDebits } from './batch-plan';
import { assertHeld, type ReservationRow, settle } from './reservations';

const chain = new AuditChain(Buffer.alloc(32, 7));
const now = new Date('2024-06-01T10:00:00Z');

function state(tenantId: string, balance: bigint, reserved = 0n, version = 3n): AccountState {
  return { tenantId, balance, reserved, version, auditSeq: version, auditHead: version === 0n ? null : Buffer.alloc(32, 1), updatedAt: new Date(0) };
}

function planOf(...states: AccountState[]): BatchPlan {
  let n = 0;
  const plan = new BatchPlan(chain, now, 'key-1', () => `00000000-0000-4000-8000-${String(++n).padStart(12, '0')}`);
  plan.take(states);
  return plan;
}

const consume = (tenantId: string, amount: bigint, key = `k-${tenantId}-${amount}`): ConsumeOperation => ({ tenantId, amount, key, reference: '', metadata: {}, actor: 'key-1' });

describe('credits domain: the plan of a batch', () => {
  describe('never overdraws', () => {
    it('lets each debit see what the earlier ones on its tenant left, and a failing one not stop smaller ones', () => {
      const plans = planDebits(() => ({ tenantId: 'a', balance: 10n, reserved: 2n, version: 1n, updatedAt: now }), [
        { tenantId: 'a', amount: 5n },
        { tenantId: 'a', amount: 4n },
        { tenantId: 'a', amount: 3n },
      ]);
      expect(plans.map((p) => p.ok)).to.deep.equal([true, false, true]);
      const refused = plans[1]!;
      expect(!refused.ok && refused.error.reason).to.equal('INSUFFICIENT_CREDITS');
      expect(!refused.ok && refused.error.metadata).to.deep.equal({ available: '3', requested: '4' });
    });

    it('refuses a debit on an unknown tenant with TENANT_NOT_FOUND', () => {
      const [plan] = planDebits(() => undefined, [{ tenantId: 'nobody', amount: 1n }]);
      expect(!plan!.ok && plan!.error.reason).to.equal('TENANT_NOT_FOUND');
    });

    it('counts reserved credits as unavailable', () => {
      const plan = planOf(state('a', 10n, 8n));
      const [result] = planConsumes(plan, [consume('a', 3n)]);
      expect(result && 'error' in result && result.error.reason).to.equal('INSUFFICIENT_CREDITS');
      expect(plan.decided).to.have.length(0);
    });

    it('asserts the account invariants on every movement, whatever the caller decided', () => {
      const plan = planOf(state('a', 10n, 4n));
      expect(() => plan.move('a', 'CONSUME', { amount: 7n, balanceDelta: -7n, reservedDelta: 0n })).to.throw(InvariantError, 'available');
      expect(() => plan.move('a', 'RELEASE', { amount: 5n, balanceDelta: 0n, reservedDelta: -5n })).to.throw(InvariantError, 'reserved');
      expect(() => plan.move('a', 'CONSUME', { amount: 11n, balanceDelta: -11n, reservedDelta: 0n })).to.throw(InvariantError, 'balance');
      expect(() => plan.move('b', 'CONSUME', { amount: 1n, balanceDelta: -1n, reservedDelta: 0n })).to.throw(InvariantError, 'taken');
      expect(plan.decided).to.have.length(0);
    });
  });

  describe('amounts', () => {
    it('moves only positive amounts that fit int64, and never past int64 max', () => {
      const plan = planOf(state('a', INT64_MAX - 1n));
      expect(() => plan.move('a', 'CONSUME', { amount: 0n, balanceDelta: 0n, reservedDelta: 0n })).to.throw(InvariantError, 'positive');
      expect(() => plan.move('a', 'TOP_UP', { amount: INT64_MAX + 1n, balanceDelta: 1n, reservedDelta: 0n })).to.throw(InvariantError, 'int64');
      expect(() => plan.move('a', 'TOP_UP', { amount: 2n, balanceDelta: 2n, reservedDelta: 0n })).to.throw(InvariantError, 'int64 max');
      const ok = plan.move('a', 'TOP_UP', { amount: 1n, balanceDelta: 1n, reservedDelta: 0n });
      expect(ok.balanceAfter).to.equal(INT64_MAX);
    });
  });

  describe('idempotent replay', () => {
    it('is not a plan item: a replayed consume neither moves nor is answered by the plan', () => {
      const plan = planOf(state('a', 10n));
      const results = planConsumes(plan, [consume('a', 4n, 'old'), consume('a', 4n, 'new')], (i) => i === 0);
      expect(results[0]).to.equal(undefined);
      expect(results[1] && 'movement' in results[1] && results[1].movement.idempotencyKey).to.equal('new');
      expect(plan.decided.map((m) => m.idempotencyKey)).to.deep.equal(['new']);
      expect(plan.account('a')!.balance).to.equal(6n);
    });
  });

  describe('movements, audit rows and heads', () => {
    it('gives each movement one version and one audit sequence number, chained from the taken head', () => {
      const plan = planOf(state('a', 10n), state('b', 5n, 0n, 0n));
      planConsumes(plan, [consume('a', 1n), consume('b', 2n), consume('a', 3n)]);
      const sealed = plan.seal();
      expect(sealed.movements.map((m) => [m.tenantId, m.auditSeq, m.balanceAfter])).to.deep.equal([
        ['a', 4n, 9n],
        ['b', 1n, 3n],
        ['a', 5n, 6n],
      ]);
      const [a1, b1, a2] = sealed.movements;
      expect(a1!.prevHash).to.deep.equal(Buffer.alloc(32, 1));
      expect(a2!.prevHash).to.deep.equal(a1!.hash);
      expect(b1!.prevHash).to.deep.equal(chain.genesis('b'));
      expect(sealed.accounts.map((h) => [h.before.tenantId, h.moves, h.after.version, h.after.balance])).to.deep.equal([
        ['a', 2, 5n, 6n],
        ['b', 1, 1n, 3n],
      ]);
      expect(sealed.accounts[0]!.after.auditHead).to.deep.equal(a2!.hash);
      expect(sealed.accounts[0]!.after.updatedAt).to.equal(now);
      // The links are the chain's own: recomputing them from the taken head gives the same hashes.
      const relinked = chain.link({ seq: 3n, hash: Buffer.alloc(32, 1) }, 'a', [a1!, a2!].map((m) => ({
        tenantId: 'a', seq: m.auditSeq, occurredAt: m.createdAt, action: m.type, amount: m.amount, balanceAfter: m.balanceAfter,
        reservedAfter: m.reservedAfter, transactionId: m.id, reservationId: m.reservationId, idempotencyKey: m.idempotencyKey, actor: m.actor,
      })));
      expect(relinked.map((r) => r.hash)).to.deep.equal([a1!.hash, a2!.hash]);
    });

    it('keeps an account that did not move as it was taken, and reports only moved accounts as changed', () => {
      const plan = planOf(state('a', 10n), state('b', 1n));
      planConsumes(plan, [consume('a', 1n), consume('b', 2n)]);
      const sealed = plan.seal();
      expect(sealed.accounts[1]).to.deep.include({ moves: 0 });
      expect(sealed.accounts[1]!.after).to.equal(sealed.accounts[1]!.before);
      expect(plan.changedAccounts().map((a) => a.tenantId)).to.deep.equal(['a']);
      expect(plan.finalStates().map((a) => a.version)).to.deep.equal([4n, 3n]);
    });

    it('forgets every movement on discard (a business failure): accounts return to their taken state', () => {
      const plan = planOf(state('a', 10n));
      plan.move('a', 'CONSUME', { amount: 4n, balanceDelta: -4n, reservedDelta: 0n });
      plan.discard();
      expect(plan.decided).to.have.length(0);
      expect(plan.account('a')!.balance).to.equal(10n);
      expect(plan.seal().accounts[0]!.moves).to.equal(0);
    });

    it('refuses to take an account that already breaks an invariant', () => {
      const plan = planOf();
      expect(() => plan.take([state('x', 1n, 2n)])).to.throw(InvariantError);
    });
  });

  describe('BatchConsume', () => {
    const items = [
      { tenantId: 'a', amount: 4n, reference: 'r1', metadata: {} },
      { tenantId: 'a', amount: 9n, reference: 'r2', metadata: {} },
    ];

    it('moves the items that fit, with the call key, and answers the rest with their error', () => {
      const plan = planOf(state('a', 10n));
      const results = planBatchConsume(plan, items, { atomic: false, key: 'batch-1' });
      expect(results.map((r) => ('movement' in r ? r.movement.idempotencyKey : r.error.reason))).to.deep.equal(['batch-1', 'INSUFFICIENT_CREDITS']);
    });

    it('moves nothing of an atomic batch with a failing item: the fitting ones report BATCH_ABORTED', () => {
      const plan = planOf(state('a', 10n));
      const results = planBatchConsume(plan, items, { atomic: true, key: 'batch-1' });
      expect(results.map((r) => ('error' in r ? r.error.reason : 'moved'))).to.deep.equal(['BATCH_ABORTED', 'INSUFFICIENT_CREDITS']);
      expect(plan.decided).to.have.length(0);
    });
  });

  describe('reservations', () => {
    const held = (over: Partial<ReservationRow> = {}): ReservationRow => ({
      id: 'r', tenant_id: 'a', amount: 10n, captured_amount: 0n, state: 'HELD', reference: '',
      expires_at: new Date(now.getTime() + 1000), created_at: now, updated_at: now, ...over,
    });

    it('commits or releases only a held reservation that has not passed its TTL', () => {
      expect(() => assertHeld(held(), now)).not.to.throw();
      const reasons = [held({ state: 'EXPIRED' }), held({ state: 'COMMITTED' }), held({ state: 'RELEASED' }), held({ expires_at: now })].map((row) => {
        try {
          assertHeld(row, now);
          return 'held';
        } catch (error) {
          return (error as { reason: string }).reason;
        }
      });
      expect(reasons).to.deep.equal(['RESERVATION_EXPIRED', 'RESERVATION_ALREADY_FINALIZED', 'RESERVATION_ALREADY_FINALIZED', 'RESERVATION_EXPIRED']);
    });

    it('captures up to the hold and releases the rest', () => {
      expect(settle(held(), undefined)).to.deep.equal({ capture: 10n, release: 0n });
      expect(settle(held(), 3n)).to.deep.equal({ capture: 3n, release: 7n });
      expect(settle(held(), 0n)).to.deep.equal({ capture: 0n, release: 10n });
      expect(() => settle(held(), 11n)).to.throw('amount: must be at most the held amount (10)');
    });

    it('moves a hold: reserve raises reserved, capture lowers both, release lowers reserved', () => {
      const plan = planOf(state('a', 10n));
      plan.move('a', 'RESERVE', { amount: 6n, balanceDelta: 0n, reservedDelta: 6n, reservationId: 'r' });
      plan.move('a', 'CAPTURE', { amount: 4n, balanceDelta: -4n, reservedDelta: -4n, reservationId: 'r' });
      plan.move('a', 'RELEASE', { amount: 2n, balanceDelta: 0n, reservedDelta: -2n, reservationId: 'r' });
      expect(plan.account('a')).to.deep.include({ balance: 6n, reserved: 0n, version: 6n });
    });
  });
});
