/**
 * Reservation rules (two-phase: reserve, then commit or release; a sweeper expires holds past
 * their TTL). Pure: the rows come from store/reservations.ts.
 */
import { captureAboveHold, reservationExpired, reservationFinalized } from '../errors';

export type ReservationState = 'HELD' | 'COMMITTED' | 'RELEASED' | 'EXPIRED';

export interface ReservationRow {
  id: string;
  tenant_id: string;
  amount: bigint;
  captured_amount: bigint;
  state: string;
  reference: string;
  expires_at: Date;
  created_at: Date;
  updated_at: Date;
}

/** Throws the business error of a reservation that can no longer be committed or released at `now`. */
export function assertHeld(row: ReservationRow, now: Date): void {
  if (row.state === 'EXPIRED') throw reservationExpired(row.id);
  if (row.state !== 'HELD') throw reservationFinalized(row.id, row.state);
  // Past its TTL but not yet swept: as good as expired (the sweeper releases the hold).
  if (row.expires_at.getTime() <= now.getTime()) throw reservationExpired(row.id);
}

/**
 * What a commit of `requested` (all when undefined) does to a hold: the amount captured and the
 * amount released; never more than the hold.
 */
export function settle(row: ReservationRow, requested: bigint | undefined): { capture: bigint; release: bigint } {
  const capture = requested ?? row.amount;
  // Depends on stored state but is the caller's mistake: not stored, the key stays free.
  if (capture > row.amount) throw captureAboveHold(row.amount);
  return { capture, release: row.amount - capture };
}
