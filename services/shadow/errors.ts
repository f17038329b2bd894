/**
 * Errors the shadow domain throws for bad caller input.
 *
 * They are the platform's ServiceError (INVALID_ARGUMENT with
 * `google.rpc.ErrorInfo{reason}` and a `google.rpc.BadRequest.FieldViolation{field,
 * description}`), so whatever path one escapes by reaches the caller as that,
 * with no mapping step a handler could forget. `field` is a path in *proto* field names
 * (`rule.any.rules[1].ip_blocklist.cidrs[0]`), because that is what the API
 * caller wrote; `message` is exact and stable enough to show to a human, but
 * clients must branch on `reason`, never on the text.
 */
import { Code, ServiceError } from '../../platform/service-error';

export class ShadowInputError extends ServiceError {
  /** Proto field path of the offending value, e.g. `rule.rate_limit.max_requests`. */
  readonly field: string;
  /** What is wrong with the field, without the field path (for FieldViolation.description). */
  readonly description: string;

  /** `reason`: UPPER_SNAKE reason for google.rpc.ErrorInfo, e.g. `INVALID_RULE`. */
  constructor(reason: string, field: string, description: string) {
    super(Code.INVALID_ARGUMENT, reason, `${field}: ${description}`, {
      fieldViolations: [{ field, description }],
      metadata: { field },
    });
    this.field = field;
    this.description = description;
  }
}

/** A rule config that cannot be compiled: bad regex, bad CIDR, threshold ≤ 0, too large, too deep. */
export class RuleConfigError extends ShadowInputError {
  constructor(field: string, description: string) {
    super('INVALID_RULE', field, description);
  }
}

/** Recommendation thresholds outside their documented ranges. */
export class ThresholdConfigError extends ShadowInputError {
  constructor(field: string, description: string) {
    super('INVALID_ARGUMENT', field, description);
  }
}

/** Samples handed to the evaluator that break an invariant (e.g. a non-finite timestamp). */
export class SampleDataError extends ShadowInputError {
  constructor(field: string, description: string) {
    super('INVALID_ARGUMENT', field, description);
  }
}
