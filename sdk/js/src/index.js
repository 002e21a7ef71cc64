// consumer-host-sdk: WebSocket consumers for consumer-host in JavaScript.
export { WebsocketConsumer, JsonWebsocketConsumer, Database } from './consumer.js';
export { defineConsumer, handlerName } from './define.js';
export { ANONYMOUS_USER } from './scope.js';
export {
  DatabaseError,
  AccessDeniedError,
  NoSuchTableError,
  ConstraintError,
  InvalidError,
  TimeoutError,
  FailedError,
  GroupError,
  InvalidGroupNameError,
  InvalidEventError,
  EventTooLargeError,
  MessageTooLargeError,
  StateTooLargeError,
  PureEventError,
} from './errors.js';
