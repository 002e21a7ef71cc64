// Errors a consumer can catch. Each host error is the WIT variant it comes
// from, as a class named after the variant, so a handler can write
// `catch (err) { if (err instanceof ConstraintError) ... }`.

/** A database call failed. `variant` is the WIT `db-error` case, `detail` the host's text. */
export class DatabaseError extends Error {
  constructor(variant, detail) {
    super(detail ? `${variant}: ${detail}` : variant);
    this.name = new.target.name;
    this.variant = variant;
    this.detail = detail ?? '';
  }
}
/** The consumer is not granted this access to the table. */
export class AccessDeniedError extends DatabaseError {}
/** No such table or column. */
export class NoSuchTableError extends DatabaseError {}
/** A constraint (unique, not null, foreign key...) refused the row. */
export class ConstraintError extends DatabaseError {}
/** The call is malformed (not a read-only statement, wrong number of parameters...). */
export class InvalidError extends DatabaseError {}
/** The statement ran longer than the host allows. */
export class TimeoutError extends DatabaseError {}
/** The database failed. */
export class FailedError extends DatabaseError {}

const DB_ERRORS = {
  'access-denied': AccessDeniedError,
  'no-such-table': NoSuchTableError,
  constraint: ConstraintError,
  invalid: InvalidError,
  timeout: TimeoutError,
  failed: FailedError,
};

/** A group call was refused. */
export class GroupError extends Error {
  constructor(variant, detail) {
    super(detail === undefined ? variant : `${variant}: ${detail}`);
    this.name = new.target.name;
    this.variant = variant;
  }
}
/** The group name is not 1 to 99 ASCII letters, digits, `-`, `_` or `.`. */
export class InvalidGroupNameError extends GroupError {}
/** The event is not a JSON object with a string `type`. */
export class InvalidEventError extends GroupError {}
/** The event is larger than the host allows; `limit` is the limit in bytes. */
export class EventTooLargeError extends GroupError {
  constructor(variant, limit) {
    super(variant, `the limit is ${limit} bytes`);
    this.limit = limit;
  }
}

const GROUP_ERRORS = {
  'invalid-name': InvalidGroupNameError,
  'invalid-event': InvalidEventError,
  'too-large': EventTooLargeError,
};

/** A message is larger than the host's maximum message size (`limit`, in bytes). */
export class MessageTooLargeError extends Error {
  constructor(limit) {
    super(`the message exceeds the host's limit of ${limit} bytes`);
    this.name = 'MessageTooLargeError';
    this.limit = limit;
  }
}

/** The consumer's persisted properties are larger than the host's state limit. */
export class StateTooLargeError extends Error {
  constructor(size, limit) {
    super(`the consumer's properties take ${size} bytes as JSON; the host keeps at most ${limit}`);
    this.name = 'StateTooLargeError';
    this.size = size;
    this.limit = limit;
  }
}

/** A handler of a pure event did more than send. */
export class PureEventError extends Error {
  constructor(type, what) {
    super(`"${type}" is listed in pureEvents, so its handler may only send; it used ${what}`);
    this.name = 'PureEventError';
  }
}

// The host-call layer throws a WIT `result` error as an Error whose `payload`
// is the error value (componentize-js does this; the fake host copies it).
function payloadOf(err) {
  if (err && typeof err === 'object' && 'payload' in err) return err.payload;
  throw err; // not a host result error: a bug, let it through unchanged
}

/** Turns a thrown db-error into its DatabaseError subclass. */
export function databaseError(err) {
  const payload = payloadOf(err);
  const Class = DB_ERRORS[payload?.tag] ?? FailedError;
  return new Class(payload?.tag ?? 'failed', payload?.val);
}

/** Turns a thrown group-error into its GroupError subclass. */
export function groupError(err) {
  const payload = payloadOf(err);
  const Class = GROUP_ERRORS[payload?.tag] ?? GroupError;
  return new Class(payload?.tag ?? 'unknown', payload?.val);
}

/** The `payload` of a host result error (for results whose error is not a variant). */
export { payloadOf };
