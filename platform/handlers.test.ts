/**
 * unimplementedService over the wire: each call type a contract can have ends
 * at once with UNIMPLEMENTED and its ErrorInfo, whatever the client does with
 * an open stream, and is counted by the interceptor like any other call.
 */
import { expect } from 'chai';
import { makeGenericClientConstructor, status as grpcStatus, type Client, type StatusObject } from '@grpc/grpc-js';
import { ConsumeRequest, ConsumeStreamRequest, CreditsServiceService } from '../gen/shieldx/credits/v1/credits';
import { IngestSamplesRequest, ShadowServiceService, WatchRolloutRequest } from '../gen/shieldx/shadow/v1/shadow';
import { errorDetails } from './grpc-errors';
import { unimplementedService } from './handlers';
import { metricValue, scrapeMetrics } from './prometheus-text';
import type { RunningService, ServiceModule } from './server';
import { address, bearer, insecure, startTestService } from '../testing/harness';

/** No one contract has all four call types: credits gives unary and bidi, shadow client and server streaming. */
const allCallTypes = {
  consume: CreditsServiceService.consume,
  ingestSamples: ShadowServiceService.ingestSamples,
  watchRollout: ShadowServiceService.watchRollout,
  consumeStream: CreditsServiceService.consumeStream,
};

const unimplementedModule: ServiceModule = {
  name: 'credits',
  grpcServiceName: 'shieldx.credits.v1.CreditsService',
  errorDomain: 'probe.shieldx.io',
  scopes: {},
  async create(ctx) {
    return { definition: allCallTypes, implementation: unimplementedService(allCallTypes, ctx.handlerOptions) as never };
  },
};

/** Far beyond a prompt answer: a call that hangs ends DEADLINE_EXCEEDED and fails the test, not mocha's timeout. */
const DEADLINE_MS = 5_000;

type StreamCall = NodeJS.EventEmitter & { write(message: unknown): boolean; end(): void };

/** The status a call ends with, whatever it is (the admin key passes auth: any status is the handler's). */
function finalStatus(call: NodeJS.EventEmitter): Promise<StatusObject> {
  call.on('data', () => undefined);
  call.on('error', () => undefined);
  return new Promise((resolve) => call.once('status', resolve));
}

const options = () => ({ deadline: Date.now() + DEADLINE_MS });

/** What a request-streaming client may do once the call is open; none of it may change the answer. */
const clientBehaviours: Record<string, (call: StreamCall, message: unknown) => void> = {
  'sends nothing and keeps the stream open': () => undefined,
  'sends a message and keeps the stream open': (call, message) => call.write(message),
  'half-closes without sending': (call) => call.end(),
};

describe('unimplementedService', () => {
  let service: RunningService;
  let client: Client & Record<string, Function>;

  before(async () => {
    service = await startTestService(unimplementedModule, { MIGRATE_ON_START: 'false' });
    const Client = makeGenericClientConstructor(allCallTypes, 'AllCallTypes');
    client = new Client(address(service), insecure) as Client & Record<string, Function>;
  });
  after(async () => {
    client.close();
    await service.shutdown();
  });

  /**
   * Checks that every call (named by what its client did) ended UNIMPLEMENTED with ErrorInfo, and that the
   * interceptor started and handled each one like any other call.
   */
  async function expectUnimplemented(method: keyof typeof allCallTypes, calls: () => Record<string, Promise<StatusObject>>) {
    const [grpc_service, grpc_method] = allCallTypes[method].path.slice(1).split('/') as [string, string];
    const labels = { grpc_service, grpc_method };
    const before = await scrapeMetrics(service);
    const statuses: Record<string, StatusObject> = {};
    for (const [what, status] of Object.entries(calls())) statuses[what] = await status;
    // Compared whole, so a failure shows what every client behaviour got.
    const codes = Object.fromEntries(Object.entries(statuses).map(([what, s]) => [what, grpcStatus[s.code]]));
    expect(codes).to.deep.equal(Object.fromEntries(Object.keys(statuses).map((what) => [what, 'UNIMPLEMENTED'])));
    for (const status of Object.values(statuses)) {
      expect(errorDetails(status)).to.include({ reason: 'NOT_IMPLEMENTED', domain: 'probe.shieldx.io' });
    }
    const after = await scrapeMetrics(service);
    const handled = (text: string) => metricValue(text, 'grpc_server_handled_total', { ...labels, grpc_code: 'Unimplemented' }) ?? 0;
    const started = (text: string) => metricValue(text, 'grpc_server_started_total', labels) ?? 0;
    const count = Object.keys(statuses).length;
    expect(handled(after) - handled(before), 'calls counted Unimplemented').to.equal(count);
    expect(started(after) - started(before), 'calls started').to.equal(count);
  }

  /** One call per client behaviour, each opened with `open` and given `message` to send. */
  function eachBehaviour(open: () => StreamCall, message: unknown): Record<string, Promise<StatusObject>> {
    return Object.fromEntries(
      Object.entries(clientBehaviours).map(([what, behave]) => {
        const call = open();
        const status = finalStatus(call);
        behave(call, message);
        return [what, status];
      }),
    );
  }

  // Unary: the call fails UNIMPLEMENTED with ErrorInfo and is counted.
  it('unary: UNIMPLEMENTED with ErrorInfo', async () => {
    await expectUnimplemented('consume', () => ({
      'sends its request': finalStatus(client.consume(ConsumeRequest.fromPartial({}), bearer(), options(), () => undefined)),
    }));
  });

  // Client streaming: the call fails at once, before the client half-closes, whatever it sends.
  it('client streaming: UNIMPLEMENTED without waiting for the client to half-close', async () => {
    await expectUnimplemented('ingestSamples', () =>
      eachBehaviour(() => client.ingestSamples(bearer(), options(), () => undefined), IngestSamplesRequest.fromPartial({ dataset: 'd' })),
    );
  });

  // Server streaming: the call fails at once instead of staying open with nothing to send.
  it('server streaming: UNIMPLEMENTED at once', async () => {
    await expectUnimplemented('watchRollout', () => ({
      'sends its request and reads': finalStatus(client.watchRollout(WatchRolloutRequest.fromPartial({ id: 'r' }), bearer(), options())),
    }));
  });

  // Bidi: the call fails at once — not only once a message arrives (it used to hang while the client
  // sent nothing, and end OK when the client half-closed without sending).
  it('bidi streaming: UNIMPLEMENTED without waiting for a message or the client to half-close', async () => {
    await expectUnimplemented('consumeStream', () =>
      eachBehaviour(() => client.consumeStream(bearer(), options()), ConsumeStreamRequest.fromPartial({ requestId: '1' })),
    );
  });
});
