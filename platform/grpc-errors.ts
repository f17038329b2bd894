/**
 * The grpc-js side of ServiceError: turning one into a status with the
 * `grpc-status-details-bin` trailer (server), and reading the reason back
 * (client).
 */
import { Metadata, type ServiceError as GrpcServiceError, type StatusObject } from '@grpc/grpc-js';
import type { ServiceError } from './service-error';
import { decodeStatusDetails, STATUS_DETAILS_KEY, toStatusDetails, type ErrorDetails } from './status-details';

/** A grpc-js status object (for callback(err) / call.destroy(err)) carrying the rich details. */
export function toGrpcStatus(error: ServiceError, domain: string): Partial<StatusObject> & { message: string } {
  const metadata = new Metadata();
  metadata.set(STATUS_DETAILS_KEY, toStatusDetails(error, domain));
  return { code: error.code, details: error.message, message: error.message, metadata };
}

/**
 * Reads the ErrorInfo of a failed client call: `errorDetails(err)?.reason`.
 * Falls back to the plain status when the server sent no details.
 */
export function errorDetails(error: unknown): ErrorDetails | undefined {
  const grpcError = error as Partial<GrpcServiceError>;
  if (typeof grpcError?.code !== 'number') return undefined;
  const raw = grpcError.metadata?.get(STATUS_DETAILS_KEY)[0];
  const decoded = decodeStatusDetails(typeof raw === 'string' ? Buffer.from(raw, 'binary') : raw);
  return (
    decoded ?? {
      code: grpcError.code,
      message: grpcError.details ?? '',
      reason: '',
      domain: '',
      metadata: {},
      fieldViolations: [],
    }
  );
}
