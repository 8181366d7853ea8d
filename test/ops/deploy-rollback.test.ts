import { launchSequence } from '../support/launch-sequence.js';

// See test/support/launch-sequence.ts: the launch sequence over real SSH, part "rollbacks".
launchSequence('rollbacks');
