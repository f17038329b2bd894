/**
 * The credits service's own metrics (credits-metrics.ts), read from its /metrics over HTTP
 * around real gRPC calls: credits_operations_total{op,result} counts each call once by
 * its outcome (success, replayed, or the lower-case error reason), credits_balance_queries_total
 * the answered GetBalance calls, credits_transactions_total{type} each committed movement, and
 * the breaker gauges read 0 (closed) while PostgreSQL and Redis are healthy. Deltas are
 * compared (read, act, read), every series at once, so a call counted twice or under another
 * label shows as well as one not counted.
 */
import { expect } from 'chai';
import type { ConsumeResponse, ReserveResponse } from '../../../gen/shieldx/credits/v1/credits';
import { metricSamples, metricValue, scrapeMetrics } from '../../../platform/prometheus-text';
import type { RunningService } from '../../../platform/server';
import { Credits, failure, key, payment, startCredits, tenant } from '../../../testing/credits-kit';

/** Every series of `name` as "label=value,..." → value (without the registry's default `service` label). */
function series(text: string, name: string): Map<string, number> {
  return new Map(
    metricSamples(text, name).map((s) => [
      Object.entries(s.labels)
        .filter(([k]) => k !== 'service')
        .sort(([x], [y]) => x.localeCompare(y))
        .map(([k, v]) => `${k}=${v}`)
        .join(','),
      s.value,
    ]),
  );
}

/** What changed in `name` between two scrapes: series → increase, unchanged series left out. */
function deltas(before: string, after: string, name: string): Record<string, number> {
  const was = series(before, name);
  const out: Record<string, number> = {};
  for (const [labels, value] of series(after, name)) {
    const delta = value - (was.get(labels) ?? 0);
    if (delta !== 0) out[labels] = delta;
  }
  return out;
}

describe('credits metrics', function () {
  this.timeout(30_000);
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

  // Successes, replays and business failures each move their own series by exactly the calls made.
  it('counts each operation once by op and result, and each movement by type', async () => {
    const t = tenant('metrics');
    const before = await scrapeMetrics(service);

    const topUp = { tenantId: t, amount: 100n, idempotencyKey: key(), reference: '', payment: payment(), metadata: {} };
    await credits.call('topUp', topUp);
    await credits.call('topUp', topUp); // replayed
    await credits.call('topUp', { ...topUp, amount: 50n, idempotencyKey: key() });
    const consume = { tenantId: t, amount: 30n, idempotencyKey: key(), reference: '', metadata: {} };
    expect((await credits.call<object, ConsumeResponse>('consume', consume)).replayed).to.equal(false);
    expect((await credits.call<object, ConsumeResponse>('consume', consume)).replayed).to.equal(true);
    expect((await failure(credits.call('consume', { ...consume, amount: 31n }))).reason).to.equal('IDEMPOTENCY_KEY_REUSED');
    expect((await failure(credits.call('consume', { ...consume, amount: 1_000n, idempotencyKey: key() }))).reason).to.equal('INSUFFICIENT_CREDITS');
    const held = await credits.call<object, ReserveResponse>('reserve', {
      tenantId: t,
      amount: 20n,
      idempotencyKey: key(),
      reference: '',
      metadata: {},
      ttl: { seconds: 600n, nanos: 0 },
    });
    // Captures 15, releases the other 5: two movements.
    await credits.call('commitReservation', { tenantId: t, reservationId: held.reservation!.id, amount: 15n, idempotencyKey: key() });
    for (let i = 0; i < 3; i++) await credits.call('getBalance', { tenantId: t, consistentRead: i === 0 });
    expect((await failure(credits.call('getBalance', { tenantId: tenant('nobody'), consistentRead: false }))).reason).to.equal('TENANT_NOT_FOUND');

    const after = await scrapeMetrics(service);
    expect(deltas(before, after, 'credits_operations_total')).to.deep.equal({
      'op=top_up,result=success': 2,
      'op=top_up,result=replayed': 1,
      'op=consume,result=success': 1,
      'op=consume,result=replayed': 1,
      'op=consume,result=idempotency_key_reused': 1,
      'op=consume,result=insufficient_credits': 1,
      'op=reserve,result=success': 1,
      'op=commit_reservation,result=success': 1,
      'op=get_balance,result=success': 3,
      'op=get_balance,result=tenant_not_found': 1,
    });
    // Answered balance reads only: the unknown tenant's is not one.
    expect(deltas(before, after, 'credits_balance_queries_total')).to.deep.equal({ '': 3 });
    // Committed movements only: no replay, refusal or failure moved money.
    expect(deltas(before, after, 'credits_transactions_total')).to.deep.equal({
      'type=top_up': 2,
      'type=consume': 1,
      'type=reserve': 1,
      'type=capture': 1,
      'type=release': 1,
    });
  });

  // Healthy dependencies: both breakers closed (0), after traffic went through them.
  it('reports both circuit breakers closed while PostgreSQL and Redis answer', async () => {
    const t = tenant('metrics');
    await credits.call('topUp', { tenantId: t, amount: 5n, idempotencyKey: key(), reference: '', payment: payment(), metadata: {} });
    await credits.call('getBalance', { tenantId: t, consistentRead: false });
    const text = await scrapeMetrics(service);
    expect(metricValue(text, 'credits_circuit_breaker_state', { dependency: 'postgres' })).to.equal(0);
    expect(metricValue(text, 'credits_circuit_breaker_state', { dependency: 'redis' })).to.equal(0);
  });
});
