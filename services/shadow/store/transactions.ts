/**
 * The transaction boundary for code outside store/ (rollout operations, IngestSamples): they open
 * a transaction here and hand its client to store functions, so every SQL statement stays in
 * store/ while a use case still commits or rolls back as one unit.
 */
export { withLockTimeout, withTransaction } from '../../../platform/db';
