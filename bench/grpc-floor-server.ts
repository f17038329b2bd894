/**
 * The floor a cached GetBalance is measured against: a bare grpc-js server
 * (grpc-js defaults, as the services use; no interceptor, no auth, no
 * Redis) answering CreditsService.GetBalance with a fixed account from
 * memory. What the same client sees from it, on the same machine in the same
 * run, is what gRPC over loopback and the host's scheduling alone cost.
 * Every other method answers UNIMPLEMENTED.
 *
 * Run by bench/credits.ts as a child process: `node --import tsx bench/grpc-floor-server.ts`;
 * it logs `{"msg":"floor listening","grpc_port":<port>}` once bound to an ephemeral loopback port,
 * the line testing/service-process.ts waits for.
 */
import { Server, ServerCredentials, status, type sendUnaryData, type ServerUnaryCall, type UntypedServiceImplementation } from '@grpc/grpc-js';
import { CreditsServiceService, type GetBalanceRequest, type GetBalanceResponse } from '../gen/shieldx/credits/v1/credits';

const server = new Server();
const implementation: UntypedServiceImplementation = {};
for (const method of Object.keys(CreditsServiceService)) {
  implementation[method] = (_call: unknown, callback: sendUnaryData<never>) => callback({ code: status.UNIMPLEMENTED, details: 'floor server' });
}
const updatedAt = new Date();
implementation.getBalance = (call: ServerUnaryCall<GetBalanceRequest, GetBalanceResponse>, callback: sendUnaryData<GetBalanceResponse>) => {
  const tenantId = call.request.tenantId;
  callback(null, { account: { tenantId, balance: 1_000_000n, reserved: 0n, available: 1_000_000n, version: 1n, updatedAt }, fromCache: true });
};
server.addService(CreditsServiceService, implementation);
server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (error, port) => {
  if (error) throw error;
  console.log(JSON.stringify({ msg: 'floor listening', grpc_port: port, metrics_port: 0 }));
});
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.on(signal, () => {
    server.forceShutdown();
    process.exit(0);
  });
}
