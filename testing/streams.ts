/**
 * Driving a multiplexed …Stream RPC (AssessStream, ConsumeStream) in tests:
 * write the items on an open call, optionally half-close, and collect every
 * answer until the call ends (OK, or the error it ended with).
 */
import { status as grpcStatus, type ClientDuplexStream } from '@grpc/grpc-js';

export function exchange<Req, Res>(
  call: ClientDuplexStream<Req, Res>,
  items: readonly Req[],
  halfClose = true,
): { call: ClientDuplexStream<Req, Res>; answers: Res[]; ended: Promise<{ error: unknown }> } {
  const answers: Res[] = [];
  const ended = new Promise<{ error: unknown }>((resolve) => {
    call.on('data', (m: Res) => answers.push(m));
    call.on('error', (error) => resolve({ error }));
    call.on('status', (status) => {
      if (status.code === grpcStatus.OK) resolve({ error: null });
    });
  });
  for (const item of items) call.write(item);
  if (halfClose) call.end();
  return { call, answers, ended };
}
