// The JavaScript chat consumer against the fake host.
import { ChatConsumer } from '../consumers.js';
import { chatTests } from './scenarios.js';

chatTests(ChatConsumer);
