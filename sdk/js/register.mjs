// Lets Node resolve `consumer-host-sdk` to this folder without installing it:
//
//   node --import /path/to/consumer-host-sdk/register.mjs --test
//
// (A project can instead have node_modules/consumer-host-sdk as a link to
// this folder; `consumer-host new` makes one.)
import { register } from 'node:module';

register('./hooks.mjs', import.meta.url);
