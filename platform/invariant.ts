/**
 * Invariants asserted in code (TigerBeetle's style: a rule stated in a comment is also checked
 * where it must hold). One condition per call, so the message names the one rule that broke.
 * A broken invariant is a bug, never the caller's fault: it surfaces as INTERNAL (ServiceError.from
 * maps every unknown error so) with the message kept in the server log only.
 */
export class InvariantError extends Error {
  override readonly name = 'InvariantError';
}

export function invariant(condition: unknown, message: string): asserts condition {
  if (!condition) throw new InvariantError(`invariant violated: ${message}`);
}
