export type { JwtForwarding, JwtLocation, JwtProvider } from './types.ts';
export { DEFAULT_CLOCK_SKEW_S, DEFAULT_JWT_CACHE_SIZE, DEFAULT_JWT_LOCATIONS } from './types.ts';
export {
  JWT_ALGORITHMS,
  claimMatches,
  findJwt,
  forwardedPayload,
  jwkProblem,
  verifyJwt,
  type FoundJwt,
  type JwtFailure,
  type JwtVerification,
} from './verify.ts';
