import { deployGuards } from '../support/deploy-guards.js';

// See test/support/deploy-guards.ts: monitor-traffic.sh --env and a bad canary rolled back by its
// watch, over real SSH.
deployGuards('canary');
