/**
 * One page-size rule for every List RPC of the shadow service (AIP-158):
 * 0 means the default, a value above the maximum is coerced to the maximum
 * (a client asking for "a lot" gets as much as we serve, not an error), and a
 * negative value is INVALID_ARGUMENT.
 */
import { ServiceError } from '../../platform/service-error';

export const DEFAULT_PAGE_SIZE = 50;
export const MAX_PAGE_SIZE = 500;

/** Rows to return for the requested `page_size`; throws INVALID_ARGUMENT naming `page_size` when negative. */
export function pageSize(requested: number): number {
  if (!Number.isInteger(requested) || requested < 0) throw ServiceError.invalidArgument('page_size', 'must not be negative');
  const size = requested === 0 ? DEFAULT_PAGE_SIZE : Math.min(requested, MAX_PAGE_SIZE);
  if (size < 1 || size > MAX_PAGE_SIZE) throw new Error(`page size ${size} out of 1..${MAX_PAGE_SIZE}`);
  return size;
}
