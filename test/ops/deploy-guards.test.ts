import { deployGuards } from '../support/deploy-guards.js';

// See test/support/deploy-guards.ts: certificate expiry, --lock-wait, --dry-run and the rollback
// refused across a contract migration, over real SSH.
deployGuards('locks');
