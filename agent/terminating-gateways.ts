// Terminating gateways (docs/gateways.md, "Terminating gateways"): each gateway's linked
// services from its `terminating-gateway` config entry, with their leaf certificates, their
// instances outside the mesh followed in discovery, and the TLS files it originates with.
import { createHash } from 'node:crypto';
import { meshSni } from '../lib/identity/index.ts';
import { RemoraError, toRemoraError } from '../lib/errors/index.ts';
import { logError, type Logger } from '../lib/log/index.ts';
import type { Clock } from '../lib/util/index.ts';
import {
  DEFAULT_PROTOCOL,
  type TerminatingConfig,
  type TerminatingService,
} from '../lib/proxy-api/index.ts';
import type { InstanceStatus } from './agent.ts';
import type { CatalogServices } from './catalog-services.ts';
import { subsetFilter, type CentralConfig } from './central-config.ts';
import { externalName, type Discovery } from './discovery.ts';
import { watchGatewayEntries } from './gateway-entries.ts';
import type { IdentityManager } from './identity.ts';
import { follow, type Instance } from './instance.ts';
import type { ConsulPort } from './ports.ts';
import type { Supervisor } from './supervisor.ts';
import {
  decodeTerminatingEntry,
  planTerminating,
  readOriginationTls,
  TERMINATING_GATEWAY,
  type PlannedTerminatingService,
} from './terminating.ts';

/** The identity-manager ID of a gateway's leaf for a linked service (its key's directory). */
export function leafId(gatewayId: string, service: string): string {
  return `${gatewayId}/linked/${service}`;
}

/** The instance an identity belongs to: itself, or the gateway of a linked service's leaf. */
export function ownerOf(id: string): string {
  const at = id.indexOf('/linked/');
  return at === -1 ? id : id.slice(0, at);
}

/** Discovery user of a terminating gateway's linked services. */
function terminatingUser(id: string): string {
  return `${id}/terminating`;
}

/** How often the TLS files of terminating gateways are read to see them change. */
const ORIGINATION_FILES_POLL_MS = 5_000;

/**
 * What a gateway's linked services originate TLS with, read from this host's files now: the
 * files that cannot be read (their services are left out), and a digest of it all to see a
 * file change.
 */
function readOrigination(
  gateway: string,
  services: readonly PlannedTerminatingService[],
): { problems: RemoraError[]; digest: string } {
  const h = createHash('sha256');
  const problems: RemoraError[] = [];
  for (const svc of services) {
    try {
      h.update(JSON.stringify(readOriginationTls(gateway, svc)));
    } catch (err) {
      const e = toRemoraError(err);
      problems.push(e);
      h.update(e.message);
    }
    h.update('\0');
  }
  return { problems, digest: h.digest('hex') };
}

export interface TerminatingGatewaysContext {
  consul: Pick<ConsulPort, 'watchConfigEntries'>;
  clock: Clock;
  logger: Logger;
  instances: ReadonlyMap<string, Instance>;
  central: Pick<CentralConfig, 'protocol' | 'resolver'>;
  discovery: Pick<Discovery, 'acquire' | 'release' | 'settled' | 'endpoints' | 'select'>;
  identity: Pick<IdentityManager, 'add' | 'remove' | 'get' | 'status'>;
  supervisor: Pick<Supervisor, 'push'>;
  catalog: Pick<CatalogServices, 'services'>;
  isStopped(): boolean;
}

export interface TerminatingGateways {
  /** The watch of the entries runs while the agent runs a terminating gateway. */
  sync(): void;
  /** Plans each gateway anew and sends it a new snapshot (its entry, or the catalog, changed). */
  push(): void;
  /** True once the entries are known: a gateway's linked services are not guessed before. */
  known(): boolean;
  /** A gateway's linked services as far as they apply, their leaves and instances followed. */
  plan(inst: Instance): PlannedTerminatingService[];
  /** The snapshot's linked services: those with a leaf and known instances. */
  field(inst: Instance): TerminatingConfig;
  /** `remora status`'s view of a gateway's linked services. */
  linkedStatus(inst: Instance): NonNullable<InstanceStatus['linked']>;
  /** Starts reading the gateways' TLS files every ORIGINATION_FILES_POLL_MS. */
  pollFiles(): void;
  stopPollingFiles(): void;
  /** Stops following a gateway's linked services and drops their leaves (it is stopping). */
  release(inst: Instance): void;
  /** Stops the watch of the entries (the agent stops). */
  stop(): void;
}

export function createTerminatingGateways(o: TerminatingGatewaysContext): TerminatingGateways {
  const { consul, clock, logger, instances, central, discovery, identity, supervisor } = o;
  const { catalog } = o;

  /** The `terminating-gateway` entries by name. */
  const entries = watchGatewayEntries({
    consul,
    logger,
    instances,
    kind: TERMINATING_GATEWAY,
    keeps: 'services',
    isStopped: () => o.isStopped(),
    onChange: push,
  });
  let filesTimer: NodeJS.Timeout | null = null;

  function push(): void {
    for (const inst of instances.values())
      if (inst.def.kind === TERMINATING_GATEWAY && !inst.stopping) {
        plan(inst);
        supervisor.push(inst.def.id);
      }
  }

  /**
   * A terminating gateway's linked services from its entry, as far as they apply; what does not
   * is reported once per change (REMORA_E_AGENT_TERMINATING_NOT_APPLIED). Each linked service
   * gets its leaf (asked of control for the gateway) and its healthy instances followed.
   */
  function plan(inst: Instance): PlannedTerminatingService[] {
    const known = entries.current();
    const raw = known?.get(inst.def.name);
    const messages: string[] = [];
    let services: PlannedTerminatingService[] = [];
    if (known !== null && raw === undefined)
      messages.push(
        `terminating gateway ${inst.def.id} has no terminating-gateway config entry named ${inst.def.name}, so it links no service; write one (consul config write), docs/gateways.md`,
      );
    if (raw !== undefined) {
      const d = decodeTerminatingEntry(raw);
      const p = planTerminating(d.entry, {
        gateway: inst.def.name,
        protocolOf: (n) => central.protocol(n) ?? DEFAULT_PROTOCOL,
        catalog: catalog.services(),
      });
      messages.push(...d.problems, ...p.problems);
      services = p.services;
    }
    const problems = messages.map(
      (m) =>
        new RemoraError('REMORA_E_AGENT_TERMINATING_NOT_APPLIED', m, { instance: inst.def.id }),
    );
    // the TLS files of each service, read on this host: one that cannot be read leaves that
    // service out
    const withFiles = services.filter((x) => x.caFile || x.certFile || x.keyFile);
    const read = readOrigination(inst.def.name, withFiles);
    problems.push(...read.problems);
    const was = inst.terminatingProblems.map((e) => e.message);
    for (const e of problems) if (!was.includes(e.message)) logError(logger, e, undefined, 'warn');
    inst.terminatingProblems = problems;
    inst.origination = withFiles.length > 0 ? { services: withFiles, digest: read.digest } : null;
    if (!inst.stopping) {
      const names = services.map((x) => x.name).sort();
      const prev = inst.terminating;
      if (
        follow(
          discovery,
          prev.map(externalName),
          names.map(externalName),
          terminatingUser(inst.def.id),
        )
      ) {
        inst.terminating = names;
        for (const n of prev) if (!names.includes(n)) identity.remove(leafId(inst.def.id, n));
        for (const n of names)
          if (!prev.includes(n)) {
            inst.leavesLoading.add(n);
            void identity
              .add({
                id: leafId(inst.def.id, n),
                service: n,
                gateway: { name: inst.def.name, instanceId: inst.def.id },
              })
              .catch((err: unknown) => logError(logger, err))
              .finally(() => {
                inst.leavesLoading.delete(n);
                supervisor.push(inst.def.id);
              });
          }
      }
    }
    // (a service whose files cannot be read is left out of the snapshot, not of the plan)
    return services;
  }

  /** The snapshot's linked services: those with a leaf and known instances. */
  function field(inst: Instance): TerminatingConfig {
    const out: TerminatingService[] = [];
    for (const p of plan(inst)) {
      const leaf = identity.get(leafId(inst.def.id, p.name));
      const ext = externalName(p.name);
      if (!leaf || !discovery.settled(ext)) continue;
      let tls;
      try {
        tls = readOriginationTls(inst.def.name, p);
      } catch {
        continue; // reported by the plan; a file that went away since
      }
      const sni = meshSni(leaf.spiffeId);
      out.push({
        service: p.name,
        sni,
        protocol: p.protocol,
        certPem: leaf.certPem,
        keyPem: leaf.keyPem,
        endpoints: discovery.endpoints(ext),
        ...(tls ? { tls } : {}),
        ...(p.disableAutoHostRewrite === true ? { disableAutoHostRewrite: true as const } : {}),
        ...gatewayResolverFields(p.name, ext, sni),
      });
    }
    return { services: out };
  }

  /**
   * What a linked service's service-resolver sets at the gateway, as Consul's gateway clusters
   * and routes take it: `ConnectTimeout`, `RequestTimeout`, `LoadBalancer` and `Subsets` (each
   * served by `<subset>.<sni>`, to the instances its filter keeps). Its redirect, failover and
   * default subset are the callers' to follow; values that cannot apply were left out (and
   * reported) by the central config, the rest of the entry applies.
   */
  function gatewayResolverFields(
    service: string,
    ext: string,
    sni: string,
  ): Pick<
    TerminatingService,
    'connectTimeoutMs' | 'requestTimeoutMs' | 'loadBalancer' | 'subsets'
  > {
    const r = central.resolver(service);
    if (r === null) return {};
    const subsets = Object.entries(r.subsets ?? {}).map(([name, expr]) => ({
      name,
      sni: `${name}.${sni}`,
      endpoints: discovery.select(ext, subsetFilter(expr)),
    }));
    return {
      ...(r.connectTimeoutMs !== undefined ? { connectTimeoutMs: r.connectTimeoutMs } : {}),
      ...(r.requestTimeoutMs !== undefined ? { requestTimeoutMs: r.requestTimeoutMs } : {}),
      ...(r.loadBalancer !== undefined ? { loadBalancer: r.loadBalancer } : {}),
      ...(subsets.length > 0 ? { subsets } : {}),
    };
  }

  /** `remora status`'s view of a terminating gateway's linked services. */
  function linkedStatus(inst: Instance): NonNullable<InstanceStatus['linked']> {
    const planned = new Map(plan(inst).map((p) => [p.name, p]));
    const fileErrors = inst.terminatingProblems.filter(
      (e) => e.code === 'REMORA_E_AGENT_TERMINATING_TLS_FILE',
    );
    return inst.terminating.map((name) => {
      const p = planned.get(name);
      const cert = identity.status(leafId(inst.def.id, name));
      const fileError = fileErrors.find((e) => e.details.service === name);
      const error = fileError
        ? { code: fileError.code, message: fileError.message }
        : !cert?.spiffeId && cert?.lastError
          ? { code: cert.lastError.code, message: cert.lastError.message }
          : null;
      return {
        name,
        protocol: p?.protocol ?? central.protocol(name) ?? DEFAULT_PROTOCOL,
        origination: p?.certFile ? 'mtls' : p?.caFile || p?.sni ? 'tls' : 'plain',
        endpoints: discovery.endpoints(externalName(name)).length,
        certificate: cert?.spiffeId !== null && cert?.spiffeId !== undefined && !cert.expired,
        ...(error ? { error } : {}),
      };
    });
  }

  /**
   * Pushes a new snapshot to each terminating gateway whose TLS files changed on disk since its
   * last one read them (a rotated client certificate, a fixed CA file, a file gone).
   */
  function checkOriginationFiles(): void {
    for (const inst of instances.values()) {
      const read = inst.origination;
      if (inst.stopping || read === null) continue;
      if (readOrigination(inst.def.name, read.services).digest === read.digest) continue;
      logger.info(
        { instance: inst.def.id },
        "a terminating gateway's TLS file changed on disk; its linked services are reconfigured",
      );
      supervisor.push(inst.def.id);
    }
    if (!o.isStopped())
      filesTimer = clock.setTimeout(checkOriginationFiles, ORIGINATION_FILES_POLL_MS);
  }

  function release(inst: Instance): void {
    const id = inst.def.id;
    for (const name of inst.terminating) {
      discovery.release(externalName(name), terminatingUser(id));
      identity.remove(leafId(id, name));
    }
    inst.terminating = [];
  }

  return {
    sync: () => entries.sync(),
    push,
    known: () => entries.current() !== null,
    plan,
    field,
    linkedStatus,
    pollFiles() {
      filesTimer = clock.setTimeout(checkOriginationFiles, ORIGINATION_FILES_POLL_MS);
    },
    stopPollingFiles() {
      if (filesTimer) clock.clearTimeout(filesTimer);
    },
    release,
    stop: () => entries.stop(),
  };
}
