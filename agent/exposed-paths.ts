// Exposed paths and checks (docs/agent.md, "Exposed paths" and "Exposed checks"): what of an
// instance's sidecar is reachable from outside the mesh without mTLS, from its definition's
// `proxy.expose` and the `Expose` of Consul's entries, and its checks pointed at the sidecar's
// listeners for them.
import { isIP } from 'node:net';
import { RemoraError } from '../lib/errors/index.ts';
import type { Logger } from '../lib/log/index.ts';
import type { ExposePath, ProxySnapshot } from '../lib/proxy-api/index.ts';
import type { AgentSettings } from './agent.ts';
import type { CentralConfig } from './central-config.ts';
import { exposeSourceName, mergeExpose, type MergedExpose } from './central-expose.ts';
import type { ServiceDefinition, SidecarDefinition } from './definitions.ts';
import { checkExposures, rerouteCheck, type CheckExposure } from './expose-checks.ts';
import type { Instance, KeepWarning } from './instance.ts';
import type { ListenerPorts } from './listener-ports.ts';
import type { ConsulPort } from './ports.ts';

/** Default range of the listener ports of exposed checks (Consul's expose_min/max_port). */
export const DEFAULT_EXPOSE_PORT_MIN = 21500;
export const DEFAULT_EXPOSE_PORT_MAX = 21755;

/**
 * The exposed paths and checks an instance asks for: its definition's `proxy.expose` merged
 * with the `Expose` of its service-defaults and of proxy-defaults, as Consul merges them
 * (agent/central-expose.ts; a gateway's are its definition's). Checks from an entry are read
 * from the definition's checks here; what of them cannot be exposed is said in `notes`.
 */
export function wantedExpose(
  central: Pick<CentralConfig, 'expose'>,
  def: ServiceDefinition,
  notes?: RemoraError[],
): MergedExpose & { checks: CheckExposure[] } {
  const sc = def.sidecar;
  if (!sc) return { paths: [], pathsFrom: null, checksFrom: null, checks: [] };
  const entries =
    def.kind === undefined
      ? central.expose(def.name)
      : { serviceDefaults: null, proxyDefaults: null };
  const m = mergeExpose({
    definition: { paths: sc.expose, checks: sc.exposeChecksGiven },
    ...entries,
  });
  const from = m.checksFrom;
  const checks =
    from === null
      ? []
      : from === 'definition'
        ? sc.exposeChecks
        : checkExposures(
            def.checks,
            `${def.id}: Expose.Checks of ${exposeSourceName(from, def.name)}`,
            notes,
          );
  return { ...m, checks };
}

export interface ExposedPathsContext {
  settings: Pick<
    AgentSettings,
    'proxyBindAddress' | 'advertiseAddress' | 'exposePortMin' | 'exposePortMax'
  >;
  consul: Pick<ConsulPort, 'agentAddress'>;
  logger: Logger;
  instances: ReadonlyMap<string, Instance>;
  central: Pick<CentralConfig, 'expose'>;
  ports: Pick<ListenerPorts, 'checkListenerPorts' | 'withUpstreamPorts'>;
  keepWarning: KeepWarning;
  /** Every instance gets a new snapshot (the check listeners' callers became known). */
  pushAll(): void;
}

export interface ExposedPaths {
  /** Asks the Consul agent its address once (the only caller of check listeners besides loopback). */
  learnConsulAgentAddress(): Promise<void>;
  /** The definition as registered: the exposed paths that apply, checks pointed at the sidecar. */
  withExposedChecks(inst: Instance, def: ServiceDefinition): ServiceDefinition;
  /** The snapshot's exposed paths (and the instance's warnings about those that do not apply). */
  exposeField(inst: Instance): Pick<ProxySnapshot, 'expose'>;
  /** The definition's exposed check paths that found no free listener port, as problems. */
  unplacedChecks(inst: Instance): RemoraError[];
  /** What a registration carries of exposed paths and checks (not who may call them). */
  exposeKey(inst: Instance): string;
}

export function createExposedPaths(ctx: ExposedPathsContext): ExposedPaths {
  const { settings, consul, logger, instances, central, ports, keepWarning } = ctx;

  /**
   * The Consul agent's address, learnt before the first registration of an instance with
   * `expose.checks`: its check listeners serve loopback and that address only (Consul's rule).
   * Null until then; an address Consul does not give as an IP leaves them to loopback.
   */
  let consulAgentAddress: string | null = null;

  async function learnConsulAgentAddress(): Promise<void> {
    if (consulAgentAddress !== null || !consul.agentAddress) return;
    const addr = await consul.agentAddress();
    if (isIP(addr) === 0)
      logger.warn(
        { address: addr },
        'the Consul agent gives no IP address of its own (/v1/agent/self Member.Addr); exposed check listeners serve loopback callers only',
      );
    consulAgentAddress = isIP(addr) === 0 ? '' : addr;
    ctx.pushAll();
  }

  /** Who may call an exposed check listener: absent when the Consul port cannot tell. */
  function checkSources(): Pick<ExposePath, 'allowSources'> {
    if (!consul.agentAddress) return {};
    return { allowSources: consulAgentAddress ? [consulAgentAddress] : [] };
  }

  /** Where a Consul agent reaches the sidecar's exposed listeners. */
  function exposedAddress(sc: SidecarDefinition): string {
    const bind = settings.proxyBindAddress;
    const wildcard = bind === '' || bind === '0.0.0.0' || bind === '::';
    return sc.address ?? (settings.advertiseAddress || (wildcard ? '127.0.0.1' : bind));
  }

  /**
   * The listener ports an instance other than `inst` holds, with what holds them: a path an
   * entry gives `inst` may not take one (the instance with the earlier ID keeps a port two
   * entries' paths ask for, as for /metrics listeners).
   */
  function portsHeldAgainst(inst: Instance): Map<number, string> {
    const held = new Map<number, string>();
    for (const o of instances.values()) {
      if (o === inst || o.stopping || !o.def.sidecar) continue;
      const id = o.def.id;
      if (o.sidecarPort !== null) held.set(o.sidecarPort, `the sidecar port of ${id}`);
      for (const u of o.def.sidecar.upstreams)
        if (u.localBindPort)
          held.set(u.localBindPort, `the upstream ${u.destinationName} of ${id}`);
      const w = wantedExpose(central, o.def);
      const pathPorts = new Set(w.paths.map((p) => p.listenerPort));
      // a check served on one of its paths' ports is held as that path is
      for (const p of ports.checkListenerPorts(o))
        if (p !== null && !pathPorts.has(p)) held.set(p, `a check listener of ${id}`);
      if (w.pathsFrom === 'definition' || id < inst.def.id)
        for (const p of w.paths) held.set(p.listenerPort, `the exposed path ${p.path} of ${id}`);
    }
    return held;
  }

  /**
   * The instance's exposed paths that apply, with why each other one does not: a path an entry
   * gives whose listener port is its sidecar port, one of its upstreams' or another instance's
   * listener is left out (the definition's own were checked when it was read).
   */
  function exposedPaths(inst: Instance): { paths: ExposePath[]; problems: string[] } {
    const wanted = wantedExpose(central, inst.def);
    if (wanted.pathsFrom === null || wanted.pathsFrom === 'definition')
      return { paths: wanted.paths, problems: [] };
    const held = portsHeldAgainst(inst);
    if (inst.sidecarPort !== null) held.set(inst.sidecarPort, 'its sidecar port');
    for (const u of ports.withUpstreamPorts(inst).sidecar?.upstreams ?? [])
      if (u.localBindPort) held.set(u.localBindPort, `its upstream ${u.destinationName}`);
    const where = `Expose.Paths of ${exposeSourceName(wanted.pathsFrom, inst.def.name)}`;
    const problems: string[] = [];
    const paths = wanted.paths.filter((p) => {
      const holder = held.get(p.listenerPort);
      if (holder !== undefined)
        problems.push(
          `${inst.def.id}: ${where}: ListenerPort ${p.listenerPort} of ${p.path} is already ${holder}; that path is not exposed (nor a check on it). Set another ListenerPort in the entry`,
        );
      return holder === undefined;
    });
    return { paths, problems };
  }

  /**
   * The definition as registered: its exposed paths those that apply (`exposedPaths`), and with
   * `checks` each exposed check path added to them and its checks pointed at the sidecar's
   * listener for it.
   */
  function withExposedChecks(inst: Instance, def: ServiceDefinition): ServiceDefinition {
    const sc = def.sidecar;
    if (!sc) return def;
    const wanted = wantedExpose(central, inst.def);
    const expose = exposedPaths(inst).paths;
    if (wanted.checks.length === 0) return withPaths(def, expose);
    const listenerPorts = ports.checkListenerPorts(inst);
    const address = exposedAddress(sc);
    const checks = [...def.checks];
    // a check served on a path left out for its taken port keeps probing the app
    const taken = new Set(wanted.paths.map((p) => p.listenerPort));
    for (const p of expose) taken.delete(p.listenerPort);
    wanted.checks.forEach((e, i) => {
      const port = listenerPorts[i];
      if (port === null || port === undefined || taken.has(port)) return;
      if (!expose.some((p) => p.listenerPort === port))
        expose.push({
          path: e.path,
          localPathPort: e.localPathPort,
          listenerPort: port,
          protocol: e.protocol,
          ...checkSources(),
        });
      for (const c of e.checks) checks[c] = rerouteCheck(checks[c]!, address, port);
    });
    return { ...withPaths(def, expose), checks };
  }

  function withPaths(def: ServiceDefinition, expose: ExposePath[]): ServiceDefinition {
    return { ...def, sidecar: { ...def.sidecar!, expose: [...expose] } };
  }

  /** The snapshot's exposed paths: the definition's (or an entry's), then its checks'. */
  function exposeField(inst: Instance): Pick<ProxySnapshot, 'expose'> {
    checkExposeEntries(inst);
    const expose = withExposedChecks(inst, inst.def).sidecar?.expose ?? [];
    return expose.length > 0 ? { expose } : {};
  }

  /**
   * Keeps the instance's warnings about what Consul's entries expose: paths whose port is taken,
   * and checks an entry's `Expose.Checks` cannot serve through the sidecar (logged once each).
   */
  function checkExposeEntries(inst: Instance): void {
    const { problems: taken } = exposedPaths(inst);
    inst.exposeWarning = keepWarning(
      inst.exposeWarning,
      'REMORA_E_AGENT_CENTRAL_CONFIG_INVALID',
      taken.length > 0 ? taken.join('; ') : null,
      { instance: inst.def.id },
    );
    const notes: RemoraError[] = [];
    const wanted = wantedExpose(central, inst.def, notes);
    const unplaced =
      wanted.checksFrom === 'definition'
        ? []
        : ports
            .checkListenerPorts(inst)
            .flatMap((port, i) =>
              port === null
                ? [
                    `${inst.def.id}: no free port left in ${settings.exposePortMin ?? DEFAULT_EXPOSE_PORT_MIN}–${settings.exposePortMax ?? DEFAULT_EXPOSE_PORT_MAX} to expose the check path ${wanted.checks[i]!.path}; the check keeps probing the app directly; widen exposePortMin–exposePortMax`,
                  ]
                : [],
            );
    const messages = [...notes.map((n) => n.message), ...unplaced];
    inst.exposeChecksWarning = keepWarning(
      inst.exposeChecksWarning,
      'REMORA_E_AGENT_DEFINITION_NOT_APPLIED',
      messages.length > 0 ? messages.join('; ') : null,
      { instance: inst.def.id },
    );
  }

  function unplacedChecks(inst: Instance): RemoraError[] {
    const sc = inst.def.sidecar;
    const problems: RemoraError[] = [];
    if (wantedExpose(central, inst.def).checksFrom !== 'definition') return problems;
    ports.checkListenerPorts(inst).forEach((port, i) => {
      if (port !== null) return;
      const e = sc!.exposeChecks[i]!;
      problems.push(
        new RemoraError(
          'REMORA_E_AGENT_DEFINITION_NOT_APPLIED',
          `service definition ${inst.def.source.file}: no free port left in ${settings.exposePortMin ?? DEFAULT_EXPOSE_PORT_MIN}–${settings.exposePortMax ?? DEFAULT_EXPOSE_PORT_MAX} to expose the check path ${e.path} of ${inst.def.id}; the check keeps probing the app directly; widen exposePortMin–exposePortMax or list the path under proxy.expose.paths`,
          { file: inst.def.source.file, field: 'connect.sidecar_service.proxy.expose.checks' },
        ),
      );
    });
    return problems;
  }

  /** What a registration carries of exposed paths and checks (not who may call them). */
  function exposeKey(inst: Instance): string {
    const def = withExposedChecks(inst, inst.def);
    const paths = (def.sidecar?.expose ?? []).map(({ allowSources: _, ...p }) => p);
    return JSON.stringify({ paths, checks: def.checks });
  }

  return { learnConsulAgentAddress, withExposedChecks, exposeField, unplacedChecks, exposeKey };
}
