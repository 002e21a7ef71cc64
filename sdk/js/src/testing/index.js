// consumer-host-sdk/testing: run consumers under Node without a socket or a component.
export { WebsocketCommunicator } from './communicator.js';
export { FakeHost, FakeConnection, HostTrap, DEFAULT_LIMITS, consumerOf } from './host.js';
export { FakeDatabase, normaliseUuid, uuid7Hex } from './database.js';
