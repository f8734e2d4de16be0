export type {
  DefaultPolicy,
  HeaderMatch,
  HttpMatch,
  Intention,
  IntentionAction,
  IntentionPermission,
  IntentionsSnapshot,
} from './types.ts';
export {
  PAIR_CACHE_LIMIT,
  compileHttpMatch,
  evaluateIntentions,
  precedenceOf,
  sortIntentions,
  stripQuery,
  withPrecedence,
  type EvaluationInput,
  type IntentionDecision,
  type RequestFacts,
} from './evaluate.ts';
export {
  MAX_INTENTIONS,
  MAX_PERMISSIONS,
  compileFullMatch,
  isIntentionName,
  validateHttpMatch,
  validateIntention,
  validateSnapshot,
} from './validate.ts';
