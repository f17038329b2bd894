/**
 * One page-size rule for every List RPC of the mesh (AIP-158): 0 means the
 * default, a value above the maximum is coerced to the maximum (a client asking
 * for "a lot" gets as much as the service serves, not an error), and a negative
 * value is INVALID_ARGUMENT naming the field.
 */
import { ServiceError } from './service-error';

export const DEFAULT_PAGE_SIZE = 50;
export const MAX_PAGE_SIZE = 500;

/** Rows to return for the requested `page_size`; throws INVALID_ARGUMENT naming `field` when negative. */
export function pageSize(requested: number, field = 'page_size', limits = { defaultSize: DEFAULT_PAGE_SIZE, maxSize: MAX_PAGE_SIZE }): number {
  if (!Number.isInteger(requested) || requested < 0) throw ServiceError.invalidArgument(field, 'must not be negative');
  const size = requested === 0 ? limits.defaultSize : Math.min(requested, limits.maxSize);
  if (size < 1 || size > limits.maxSize) throw new Error(`page size ${size} out of 1..${limits.maxSize}`);
  return size;
}
