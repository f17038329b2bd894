/**
 * A ServiceError on the wire: the `google.rpc.Status` (with `google.rpc.ErrorInfo` and, for bad
 * input, `google.rpc.BadRequest`) carried in the `grpc-status-details-bin` trailer or in a
 * stream's per-item result, and reading one back on the client side.
 */
import { Any } from '../gen/google/protobuf/any';
import { BadRequest, ErrorInfo } from '../gen/google/rpc/error_details';
import { Status } from '../gen/google/rpc/status';
import type { FieldViolation, ServiceError } from './service-error';

export const STATUS_DETAILS_KEY = 'grpc-status-details-bin';
const ERROR_INFO_TYPE_URL = 'type.googleapis.com/google.rpc.ErrorInfo';
const BAD_REQUEST_TYPE_URL = 'type.googleapis.com/google.rpc.BadRequest';

/** The google.rpc.Status bytes for the `grpc-status-details-bin` trailer. */
export function toStatusDetails(error: ServiceError, domain: string): Buffer {
  return Buffer.from(Status.encode(toStatus(error, domain)).finish());
}

/** As a google.rpc.Status message: code, message, ErrorInfo and (if any) BadRequest. */
export function toStatus(error: ServiceError, domain: string): Status {
  const details: Any[] = [
    {
      typeUrl: ERROR_INFO_TYPE_URL,
      value: Buffer.from(
        ErrorInfo.encode({ reason: error.reason, domain: error.domain || domain, metadata: { ...error.metadata } }).finish(),
      ),
    },
  ];
  if (error.fieldViolations.length > 0) {
    details.push({
      typeUrl: BAD_REQUEST_TYPE_URL,
      value: Buffer.from(BadRequest.encode({ fieldViolations: error.fieldViolations.map((v) => ({ ...v })) }).finish()),
    });
  }
  return { code: error.code, message: error.message, details };
}

/** What a client reads back from a failed call's trailer. */
export interface ErrorDetails {
  readonly code: number;
  readonly message: string;
  readonly reason: string;
  readonly domain: string;
  readonly metadata: Record<string, string>;
  readonly fieldViolations: FieldViolation[];
}

/**
 * Decodes the `grpc-status-details-bin` bytes of a failed call. Returns
 * undefined when the trailer is absent or not a google.rpc.Status.
 */
export function decodeStatusDetails(bytes: Buffer | Uint8Array | undefined): ErrorDetails | undefined {
  if (bytes === undefined || bytes.length === 0) return undefined;
  let status: Status;
  try {
    status = Status.decode(bytes);
  } catch {
    return undefined;
  }
  return statusDetails(status);
}

/** The ErrorInfo and BadRequest of a google.rpc.Status (an error carried in a message, as in a stream's per-item result). */
export function statusDetails(status: Status): ErrorDetails {
  let info: ErrorInfo | undefined;
  let badRequest: BadRequest | undefined;
  for (const detail of status.details) {
    if (detail.typeUrl === ERROR_INFO_TYPE_URL) info = ErrorInfo.decode(detail.value);
    if (detail.typeUrl === BAD_REQUEST_TYPE_URL) badRequest = BadRequest.decode(detail.value);
  }
  return {
    code: status.code,
    message: status.message,
    reason: info?.reason ?? '',
    domain: info?.domain ?? '',
    metadata: info?.metadata ?? {},
    fieldViolations: badRequest?.fieldViolations ?? [],
  };
}
