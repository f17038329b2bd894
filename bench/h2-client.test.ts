/**
 * The bench's lean HTTP/2 gRPC caller speaks real gRPC: the credits service
 * (grpc-js server, full interceptor chain) answers it as it answers the
 * generated client, and failures come back with their gRPC status code.
 */
import { status as grpcStatus } from '@grpc/grpc-js';
import { expect } from 'chai';
import { ConsumeRequest, ConsumeResponse, CreditsServiceService, GetBalanceRequest, GetBalanceResponse } from '../gen/shieldx/credits/v1/credits';
import type { RunningService } from '../platform/server';
import { Credits, key, payment, startCredits, tenant } from '../testing/credits-kit';
import { address, testKeys } from '../testing/harness';
import { GrpcCallError, H2GrpcClient } from './h2-client';

describe('bench h2 gRPC caller', function () {
  this.timeout(30_000);
  let service: RunningService;
  let credits: Credits;
  let h2: H2GrpcClient;

  before(async () => {
    service = await startCredits();
    credits = new Credits(service);
    h2 = new H2GrpcClient(address(service), 2, { authorization: `Bearer ${testKeys.admin.key}` });
  });
  after(async () => {
    h2.close();
    credits.close();
    await service.shutdown();
  });

  // A consume made through it is applied and answered exactly like one made through the generated client.
  it('makes calls the service answers as it answers the generated client', async () => {
    const t = tenant('h2');
    await credits.call('topUp', { tenantId: t, amount: 10n, idempotencyKey: key(), reference: '', payment: payment(), metadata: {} });
    const request: ConsumeRequest = { tenantId: t, amount: 3n, idempotencyKey: key(), reference: 'r', metadata: { a: 'b' } };
    const viaH2 = await h2.unary(CreditsServiceService.consume.path, ConsumeRequest, ConsumeResponse, request, 5_000);
    expect(viaH2.account!.balance).to.equal(7n);
    expect(viaH2.transaction!.metadata).to.deep.equal({ a: 'b' });
    const replay = await credits.call<ConsumeRequest, ConsumeResponse>('consume', request);
    expect(replay.replayed).to.equal(true);
    expect(replay.transaction).to.deep.equal(viaH2.transaction);
    const balance = await h2.unary(CreditsServiceService.getBalance.path, GetBalanceRequest, GetBalanceResponse, { tenantId: t, consistentRead: true }, 5_000);
    expect(balance.account!.available).to.equal(7n);
  });

  // Errors carry the gRPC status code (a trailers-only response included), as runLoad expects.
  it('rejects with the gRPC status code', async () => {
    const unknown = await h2
      .unary(CreditsServiceService.getBalance.path, GetBalanceRequest, GetBalanceResponse, { tenantId: tenant('none'), consistentRead: false }, 5_000)
      .catch((e: unknown) => e);
    expect(unknown).to.be.instanceOf(GrpcCallError);
    expect((unknown as GrpcCallError).code).to.equal(grpcStatus.NOT_FOUND);
    const anonymous = new H2GrpcClient(address(service), 1, {});
    try {
      const refused = await anonymous
        .unary(CreditsServiceService.getBalance.path, GetBalanceRequest, GetBalanceResponse, { tenantId: 'x', consistentRead: false }, 5_000)
        .catch((e: unknown) => e);
      expect((refused as GrpcCallError).code).to.equal(grpcStatus.UNAUTHENTICATED);
    } finally {
      anonymous.close();
    }
  });
});
