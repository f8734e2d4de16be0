export { createClock, type Clock } from './clock.ts';
export { backoffDelay, type BackoffOptions } from './backoff.ts';
export { waitFor } from './wait.ts';
export { findExecutable } from './executable.ts';
