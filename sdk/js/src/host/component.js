// The host-call layer inside a component: the WIT imports themselves.
//
// componentize-js exposes each imported interface as a module named after
// it, functions in camelCase. A WIT `result` error arrives as a thrown Error
// whose `payload` is the error value; the SDK turns those into its error
// classes. The fake host in consumer-host-sdk/testing has this same shape.
import { getScope, accept, send, close } from 'consumer-host:consumer/connection@0.2.0';
import { groupAdd, groupDiscard, groupSend } from 'consumer-host:consumer/groups@0.2.0';
import { dbInsert, dbQuery } from 'consumer-host:consumer/database@0.2.0';
import { getState, setState } from 'consumer-host:consumer/state@0.2.0';
import { log } from 'consumer-host:consumer/logging@0.2.0';

export const componentHost = Object.freeze({
  getScope,
  accept,
  send,
  close,
  groupAdd,
  groupDiscard,
  groupSend,
  dbInsert,
  dbQuery,
  getState,
  setState,
  log,
});
