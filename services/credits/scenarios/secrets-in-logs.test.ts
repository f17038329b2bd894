/**
 * What the credits service writes to its log while it handles card payments:
 * never the card number (spaced or not), the cardholder, or the caller's API
 * key, whether the call succeeds, is refused or replays. The service runs as
 * its own process (the production entry point) at LOG_LEVEL=debug, so every
 * call is logged, and its whole stdout is read.
 */
import { expect } from 'chai';
import { CreditsServiceClient, type TopUpRequest } from '../../../gen/shieldx/credits/v1/credits';
import { errorDetails } from '../../../platform/grpc-errors';
import { spawnService, type ChildService } from '../../../testing/child-service';
import { bearer, insecure, testKeys } from '../../../testing/harness';
import { creditsEnv, key, tenant } from '../../../testing/credits-kit';

/** A Luhn-valid test card used nowhere else, and one digit off (Luhn-invalid). */
const CARD = '4000056655665556';
const BAD_CARD = '4000056655665557';
const HOLDER = 'Grace Brewster Hopper';

describe('credits logs carry no secrets', function () {
  this.timeout(60_000);
  let child: ChildService;
  let client: CreditsServiceClient;

  before(async () => {
    child = await spawnService('credits', { ...creditsEnv(), LOG_LEVEL: 'debug' });
    client = new CreditsServiceClient(`127.0.0.1:${child.grpcPort}`, insecure);
  });
  after(async () => {
    client?.close();
    await child?.stop();
  });

  const topUp = (req: Partial<TopUpRequest>) =>
    new Promise<unknown>((resolve) =>
      client.topUp(
        {
          tenantId: tenant('logs'),
          amount: 10n,
          idempotencyKey: key(),
          reference: '',
          metadata: {},
          payment: { cardNumber: CARD.replace(/(\d{4})(?=\d)/g, '$1 '), expiryMonth: 12, expiryYear: new Date().getUTCFullYear() + 2, cardholderName: HOLDER, processorReference: 'ch_logs' },
          ...req,
        } as TopUpRequest,
        bearer(),
        (error) => resolve(error ?? undefined),
      ),
    );

  // A success, a refused card, a reused key with another card, and a call with a wrong API key.
  it('logs calls without card numbers, cardholders or API keys', async () => {
    const t = tenant('logs');
    const k = key();
    expect(await topUp({ tenantId: t, idempotencyKey: k })).to.equal(undefined);
    const refused = errorDetails(await topUp({ payment: { cardNumber: BAD_CARD, expiryMonth: 12, expiryYear: 2099, cardholderName: HOLDER, processorReference: '' } }));
    expect(refused?.reason).to.equal('INVALID_ARGUMENT');
    const reused = errorDetails(await topUp({ tenantId: t, idempotencyKey: k, amount: 11n }));
    expect(reused?.reason).to.equal('IDEMPOTENCY_KEY_REUSED');
    const wrongKey = await new Promise<unknown>((resolve) =>
      client.getBalance({ tenantId: t, consistentRead: false }, bearer({ key: `${testKeys.admin.key}x` }), (error) => resolve(error)),
    );
    expect(errorDetails(wrongKey)?.reason).to.equal('INVALID_CREDENTIALS');
    await child.stop();

    const lines = child.stdout();
    // The calls were logged (debug logs successes too): the check below read them.
    expect(lines.filter((l) => l.includes('/shieldx.credits.v1.CreditsService/TopUp')).length).to.be.at.least(3);
    const log = lines.join('\n');
    const digits = log.replace(/[\s-]/g, '');
    for (const secret of [CARD, BAD_CARD, HOLDER, testKeys.admin.key]) {
      expect(digits.includes(secret.replace(/[\s-]/g, '')), `${secret.slice(0, 6)}… in the log`).to.equal(false);
    }
  });
});
