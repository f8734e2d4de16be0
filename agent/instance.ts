// One instance the agent runs (a service with its sidecar, or a gateway) as the agent's parts
// (agent/agent.ts) share it, and the small helpers they all use on it.
import { RemoraError, type ErrorCode } from '../lib/errors/index.ts';
import { logError, type Logger } from '../lib/log/index.ts';
import type { Clock } from '../lib/util/index.ts';
import type { InstanceStatus } from './agent.ts';
import type { ServiceDefinition } from './definitions.ts';
import type { Discovery } from './discovery.ts';
import type { IngressProblem } from './ingress.ts';
import type { PlannedTerminatingService } from './terminating.ts';

export type Warning = InstanceStatus['warnings'][number];

export interface Instance {
  def: ServiceDefinition;
  sidecarPort: number | null;
  registered: boolean;
  registering: boolean;
  regAttempt: number;
  regTimer: NodeJS.Timeout | null;
  registrationError: InstanceStatus['registrationError'];
  stopping: boolean;
  /** True while an adopted proxy has not said it is ready yet: registering now would flip it to critical. */
  holdRegistration: boolean;
  /** Transparent rules are installed once the proxy was ready (so nothing is steered to no listener). */
  transparentArmed: boolean;
  /** Services this transparent instance calls by its intentions, not by `upstreams` (sorted). */
  derived: string[];
  /** Services its upstreams' routes and splits send calls to, besides the upstreams (sorted). */
  targets: string[];
  /**
   * Upstreams (with their listener kind) of the last snapshot the proxy applied in this run:
   * only their addresses are redirected. Null until one is (an adopted proxy keeps every
   * upstream's rules meanwhile).
   */
  listening: ReadonlySet<string> | null;
  /** Set while intentions allow more services than `transparentDerivedMax` leaves room for. */
  derivedLimit: Warning | null;
  /** The shared-namespace warning last logged for it (so each change is logged once). */
  sharedWarning: Warning | null;
  /** Set while the mesh confines every user of the host but the proxies (no `app_user`). */
  confinedWarning: Warning | null;
  /** Set while a permissive MutualTLSMode it was given does not apply (docs/agent.md). */
  mtlsWarning: Warning | null;
  /** Set while the /metrics listener it asks for cannot be given (its port is taken). */
  metricsWarning: Warning | null;
  /** Set while a path Consul's entries expose cannot be served (its listener port is taken). */
  exposeWarning: Warning | null;
  /** Set while checks Consul's entries expose (`Expose.Checks`) cannot all be served. */
  exposeChecksWarning: Warning | null;
  /** The exposed paths and checks of its last registration (see `exposeKey`). */
  registeredExpose: string | null;
  /** The readiness-check write in flight; writes are serialized so a late one never undoes a newer one. */
  checkWrite: Promise<void> | null;
  /** Set when the state changed while a write was in flight: the writer goes round once more. */
  checkAgain: boolean;
  /** Why the proxy last said it is not ready (the check's output). */
  notReadyReason: string;
  /** An ingress gateway's services followed in discovery (sorted). */
  ingress: string[];
  /** What of an ingress gateway's entry does not apply (logged once each). */
  ingressProblems: IngressProblem[];
  /** A terminating gateway's linked services: leaves managed, instances followed (sorted). */
  terminating: string[];
  /** What of a terminating gateway's entry does not apply (logged once each). */
  terminatingProblems: RemoraError[];
  /**
   * Its linked services that originate TLS with files, and a digest of what its last plan read
   * of them (`readOrigination`): a file rotated on disk is seen at the next poll.
   */
  origination: { services: PlannedTerminatingService[]; digest: string } | null;
  /**
   * Linked services whose leaf is being loaded from disk (or asked for the first time): the
   * gateway's snapshot waits for them, so a restarted agent never sends one without them.
   */
  leavesLoading: Set<string>;
}

/** A newly defined instance: nothing registered, followed or warned about yet. */
export function newInstance(def: ServiceDefinition, sidecarPort: number | null): Instance {
  return {
    def,
    sidecarPort,
    registered: false,
    registering: false,
    regAttempt: 0,
    regTimer: null,
    registrationError: null,
    stopping: false,
    holdRegistration: false,
    transparentArmed: false,
    derived: [],
    targets: [],
    listening: null,
    derivedLimit: null,
    sharedWarning: null,
    confinedWarning: null,
    mtlsWarning: null,
    metricsWarning: null,
    exposeWarning: null,
    exposeChecksWarning: null,
    registeredExpose: null,
    checkWrite: null,
    checkAgain: false,
    notReadyReason: 'proxy not ready',
    ingress: [],
    ingressProblems: [],
    terminating: [],
    terminatingProblems: [],
    origination: null,
    leavesLoading: new Set(),
  };
}

/**
 * Moves `user`'s discovery watches from the services `prev` to those of `next` (both sorted);
 * false when they are the same.
 */
export function follow(
  discovery: Pick<Discovery, 'acquire' | 'release'>,
  prev: readonly string[],
  next: readonly string[],
  user: string,
): boolean {
  if (next.length === prev.length && next.every((n, i) => n === prev[i])) return false;
  for (const n of next) if (!prev.includes(n)) discovery.acquire(n, user);
  for (const n of prev) if (!next.includes(n)) discovery.release(n, user);
  return true;
}

/** Where a gateway's listeners bind: its definition's address, else the proxies' bind address. */
export function gatewayBindAddress(inst: Instance, proxyBindAddress: string): string {
  return inst.def.address ?? proxyBindAddress;
}

/** The warning to keep for `message` (null: none); each new one is logged once. */
export type KeepWarning = (
  prev: Warning | null,
  code: ErrorCode,
  message: string | null,
  details: Record<string, unknown>,
) => Warning | null;

export function createWarningKeeper(o: { logger: Logger; clock: Clock }): KeepWarning {
  return (prev, code, message, details) => {
    if (message === (prev?.message ?? null)) return prev;
    if (message === null) return null;
    logError(o.logger, new RemoraError(code, message, details), undefined, 'warn');
    return { code, message, at: new Date(o.clock.now()).toISOString() };
  };
}
