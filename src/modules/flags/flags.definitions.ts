/**
 * Every feature flag, defined in code with the state it has when nobody changed it. A flag that is
 * not here does not exist: the admin API refuses it and the database cannot add one. Remove a
 * flag's definition (and its uses) once its rollout is done; a leftover override row is ignored.
 */

export interface FlagState {
  /** Off: nobody has the feature, whatever else is set (the kill switch). */
  readonly enabled: boolean;
  /** Of the users not in `allowUsers`, this percentage (0–100) has it: a stable hash decides who. */
  readonly percentage: number;
  /** User ids that have the feature whenever it is enabled. */
  readonly allowUsers: readonly string[];
}

export interface FlagDefinition {
  readonly description: string;
  readonly default: FlagState;
}

/** Units of one product an order may hold while `checkout-unit-limit` is on for the buyer. */
export const checkoutUnitLimit = 10;

export const flagDefinitions = {
  'checkout-unit-limit': {
    description: `New checkout rule: an order may hold at most ${checkoutUnitLimit} units of each product (more → 422).`,
    default: { enabled: false, percentage: 0, allowUsers: [] },
  },
} as const satisfies Record<string, FlagDefinition>;

export type FlagKey = keyof typeof flagDefinitions;

export const flagKeys = Object.keys(flagDefinitions) as FlagKey[];

export function isFlagKey(key: string): key is FlagKey {
  return Object.hasOwn(flagDefinitions, key);
}
