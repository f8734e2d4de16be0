/**
 * The state of the embedded catalog: one node (this agent), its services and checks, the KV
 * store, and Consul's raft-style indexes that drive blocking queries. Behaviour follows Consul's
 * agent and state store (agent/agent.go, agent/sidecar_service.go, agent/consul/state/*.go).
 */
import { createHash, randomUUID } from 'node:crypto';
import type { Logger } from '../log/index.ts';
import type { Clock } from '../util/index.ts';
import {
  DEFAULT_CHECK_TIMEOUT_MS,
  DEFAULT_OUTPUT_MAX_SIZE,
  capOutput,
  probeHttp,
  probeTcp,
  type ProbeResult,
} from './checks.ts';
import type { ConfigEntryRecord, ConfigKind } from './config-entries.ts';
import { NS_PER_MS, formatGoDuration } from './duration.ts';
import { HttpError, formatMultiError } from './http-error.ts';
import type {
  CheckRecord,
  CheckTypeDef,
  HealthStatus,
  KvEntry,
  ServiceRecord,
  WireProxy,
  WireUpstream,
} from './types.ts';

export const SIDECAR_SUFFIX = '-sidecar-proxy';
export const DEFAULT_SIDECAR_MIN_PORT = 21000;
export const DEFAULT_SIDECAR_MAX_PORT = 21255;
/** Consul's check_reap_interval (30 s) and the minimum deregister_critical_service_after (1 m). */
export const DEFAULT_REAP_INTERVAL_MS = 30_000;
export const DEFAULT_DEREGISTER_MIN_MS = 60_000;
/** kv_max_value_size default. */
export const KV_MAX_VALUE_SIZE = 512 * 1024;
export const MAINTENANCE_DEFAULT_REASON =
  'Maintenance mode is enabled for this service, but no reason was provided. This is a default message.';
const SERVICE_MAINT_PREFIX = '_service_maintenance:';
const VALID_STATUS = new Set(['passing', 'warning', 'critical']);

export interface CatalogOptions {
  nodeName: string;
  datacenter: string;
  clock: Clock;
  random: () => number;
  logger: Logger;
  sidecarMinPort?: number;
  sidecarMaxPort?: number;
  reapIntervalMs?: number;
  deregisterMinMs?: number;
}

interface CheckState {
  rec: CheckRecord;
  def: CheckTypeDef;
  timer?: NodeJS.Timeout;
  lastOutput: string;
  criticalSince?: number;
  successes: number;
  failures: number;
  running: boolean;
}

interface KvStored {
  key: string;
  flags: number;
  value: Buffer | null;
  createIndex: number;
  modifyIndex: number;
}

export interface NodeRecord {
  ID: string;
  Node: string;
  Address: string;
  Datacenter: string;
  TaggedAddresses: Record<string, string>;
  Meta: Record<string, string>;
  CreateIndex: number;
  ModifyIndex: number;
}

const isAnyAddress = (a: string): boolean => a === '0.0.0.0' || a === '::' || a === '[::]';

function str(v: unknown): string {
  return typeof v === 'string' ? v : '';
}
function num(v: unknown): number {
  return typeof v === 'number' ? v : 0;
}
function rec(v: unknown): Record<string, unknown> | undefined {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
    ? (v as Record<string, unknown>)
    : undefined;
}

function validateMeta(meta: Record<string, string>): string | undefined {
  const entries = Object.entries(meta);
  if (entries.length > 64) return 'Node metadata cannot contain more than 64 key/value pairs';
  for (const [k, v] of entries) {
    let why: string | undefined;
    if (k === '') why = 'Key cannot be blank';
    else if (!/^[a-zA-Z0-9_-]+$/.test(k)) why = 'Key contains invalid characters';
    else if (k.length > 128) why = 'Key is too long (limit: 128 characters)';
    else if (k.startsWith('consul-')) why = "Key prefix 'consul-' is reserved for internal use";
    else if (v.length > 512) why = 'Value is too long (limit: 512 characters)';
    if (why) return `Couldn't load metadata pair ('${k}', '${v}'): ${why}`;
  }
  return undefined;
}

/** Validates a check definition as structs.CheckType.Validate does; returns the reason. */
export function validateCheckType(c: CheckTypeDef): string | undefined {
  const interval = c.Interval ?? 0;
  const ttl = c.TTL ?? 0;
  const intervalCheck =
    (c.ScriptArgs?.length ?? 0) > 0 ||
    !!c.HTTP ||
    !!c.TCP ||
    !!c.UDP ||
    !!c.GRPC ||
    !!c.H2PING ||
    !!c.OSService;
  const alias = !!c.AliasNode || !!c.AliasService;
  if (interval > 0 && ttl > 0) return 'Interval and TTL cannot both be specified';
  if (intervalCheck && interval <= 0)
    return 'Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks';
  if (intervalCheck && alias) return 'Interval cannot be set for Alias checks';
  if (alias && ttl > 0) return 'TTL must be not be set for Alias checks';
  if (!intervalCheck && !alias && ttl <= 0) return 'TTL must be > 0 for TTL checks';
  if ((c.OutputMaxSize ?? 0) < 0) return 'MaxOutputMaxSize must be positive';
  if ((c.FailuresBeforeWarning ?? 0) > (c.FailuresBeforeCritical ?? 0))
    return "FailuresBeforeWarning can't be higher than FailuresBeforeCritical";
  return undefined;
}

function checkTypeName(c: CheckTypeDef): string {
  const interval = (c.Interval ?? 0) > 0;
  if (c.GRPC && interval) return 'grpc';
  if (c.HTTP && interval) return 'http';
  if ((c.TTL ?? 0) > 0) return 'ttl';
  if (c.TCP && interval) return 'tcp';
  if (c.UDP && interval) return 'udp';
  if (c.AliasNode || c.AliasService) return 'alias';
  if ((c.ScriptArgs?.length ?? 0) > 0 && c.DockerContainerID && interval) return 'docker';
  if ((c.ScriptArgs?.length ?? 0) > 0 && interval) return 'script';
  if (c.H2PING && interval) return 'h2ping';
  if (c.OSService && interval) return 'os_service';
  return '';
}

/** The check types a service definition carries (ServiceDefinition.CheckTypes). */
export function serviceCheckTypes(def: Record<string, unknown>): CheckTypeDef[] {
  const out: CheckTypeDef[] = [];
  const single = rec(def.Check);
  if (single && Object.keys(single).length > 0) out.push(single);
  if (Array.isArray(def.Checks)) {
    for (const c of def.Checks) out.push(rec(c) ?? {});
  }
  return out;
}

function statusRank(s: string): number {
  return s === 'critical' ? 2 : s === 'warning' ? 1 : 0;
}

function addTo(m: Map<string, Set<string>>, k: string, v: string): void {
  let set = m.get(k);
  if (!set) m.set(k, (set = new Set()));
  set.add(v);
}

function removeFrom(m: Map<string, Set<string>>, k: string, v: string): void {
  const set = m.get(k);
  if (!set) return;
  set.delete(v);
  if (set.size === 0) m.delete(k);
}

/** Services by ID, with secondary indexes by name and by Connect destination. */
class ServiceTable {
  private readonly rows = new Map<string, ServiceRecord>();
  readonly byName = new Map<string, Set<string>>();
  readonly byDest = new Map<string, Set<string>>();

  get(id: string): ServiceRecord | undefined {
    return this.rows.get(id);
  }
  has(id: string): boolean {
    return this.rows.has(id);
  }
  values(): IterableIterator<ServiceRecord> {
    return this.rows.values();
  }
  set(id: string, svc: ServiceRecord): void {
    this.delete(id);
    this.rows.set(id, svc);
    addTo(this.byName, svc.Service, id);
    const dest = connectDestination(svc);
    if (dest) addTo(this.byDest, dest, id);
  }
  delete(id: string): void {
    const prev = this.rows.get(id);
    if (!prev) return;
    this.rows.delete(id);
    removeFrom(this.byName, prev.Service, id);
    const dest = connectDestination(prev);
    if (dest) removeFrom(this.byDest, dest, id);
  }
  pick(ids: Set<string> | undefined): ServiceRecord[] {
    const out: ServiceRecord[] = [];
    for (const id of [...(ids ?? [])].sort()) {
      const s = this.rows.get(id);
      if (s) out.push(s);
    }
    return out;
  }
}

/** The destination a service serves Connect traffic for: its proxy's, or its own if native. */
function connectDestination(s: ServiceRecord): string | undefined {
  if (s.Kind === 'connect-proxy' && s.Proxy.DestinationServiceName)
    return s.Proxy.DestinationServiceName;
  if (s.Connect.Native) return s.Service;
  return undefined;
}

/** Checks by ID, with secondary indexes by service and by alias target. */
class CheckTable {
  private readonly rows = new Map<string, CheckState>();
  readonly bySvc = new Map<string, Set<string>>();
  readonly aliasByTarget = new Map<string, Set<string>>();

  get(id: string): CheckState | undefined {
    return this.rows.get(id);
  }
  has(id: string): boolean {
    return this.rows.has(id);
  }
  values(): IterableIterator<CheckState> {
    return this.rows.values();
  }
  get size(): number {
    return this.rows.size;
  }
  set(id: string, st: CheckState): void {
    this.delete(id);
    this.rows.set(id, st);
    addTo(this.bySvc, st.rec.ServiceID, id);
    if (st.def.AliasService) addTo(this.aliasByTarget, st.def.AliasService, id);
  }
  delete(id: string): void {
    const prev = this.rows.get(id);
    if (!prev) return;
    this.rows.delete(id);
    removeFrom(this.bySvc, prev.rec.ServiceID, id);
    if (prev.def.AliasService) removeFrom(this.aliasByTarget, prev.def.AliasService, id);
  }
  ofService(serviceId: string): CheckState[] {
    const out: CheckState[] = [];
    for (const id of this.bySvc.get(serviceId) ?? []) {
      const st = this.rows.get(id);
      if (st) out.push(st);
    }
    return out;
  }
}

export class Catalog {
  readonly node: NodeRecord;
  index = 0;
  private readonly services = new ServiceTable();
  private readonly checks = new CheckTable();
  /** Services touched and alias checks added by the current write, for alias updates. */
  private readonly dirty = new Set<string>();
  private readonly pendingAlias = new Set<string>();
  private readonly nodeChecks: CheckRecord[];
  private readonly serviceIndex = new Map<string, number>();
  private readonly connectIndex = new Map<string, number>();
  private servicesTableIndex = 0;
  /** Highest index of any catalog (node/service/check) write; KV writes do not move it. */
  private catalogIndex = 0;
  private readonly kv = new Map<string, KvStored>();
  private kvTableIndex = 0;
  private readonly kvTombstones = new Map<string, number>();
  /** Config entries by kind, then name; each kind's index moves on every write to it. */
  private readonly config = new Map<ConfigKind, Map<string, ConfigEntryRecord>>();
  private readonly configIndex = new Map<ConfigKind, number>();
  private readonly listeners = new Set<() => void>();
  private reapTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly o: Required<Omit<CatalogOptions, 'logger' | 'clock' | 'random'>> &
    CatalogOptions;

  constructor(options: CatalogOptions) {
    this.o = {
      sidecarMinPort: DEFAULT_SIDECAR_MIN_PORT,
      sidecarMaxPort: DEFAULT_SIDECAR_MAX_PORT,
      reapIntervalMs: DEFAULT_REAP_INTERVAL_MS,
      deregisterMinMs: DEFAULT_DEREGISTER_MIN_MS,
      ...options,
    };
    // Like `consul agent -dev`: the node and the `consul` service exist from the start, so no
    // index is ever 0.
    const idx = this.bump();
    this.node = {
      ID: randomUUID(),
      Node: options.nodeName,
      Address: '127.0.0.1',
      Datacenter: options.datacenter,
      TaggedAddresses: {
        lan: '127.0.0.1',
        lan_ipv4: '127.0.0.1',
        wan: '127.0.0.1',
        wan_ipv4: '127.0.0.1',
      },
      Meta: { 'consul-network-segment': '', 'consul-version': '1.20.0' },
      CreateIndex: idx,
      ModifyIndex: idx,
    };
    this.nodeChecks = [
      {
        Node: options.nodeName,
        CheckID: 'serfHealth',
        Name: 'Serf Health Status',
        Status: 'passing',
        Notes: '',
        Output: 'Agent alive and reachable',
        ServiceID: '',
        ServiceName: '',
        ServiceTags: [],
        Type: '',
        Interval: '',
        Timeout: '',
        ExposedPort: 0,
        Definition: {},
        CreateIndex: idx,
        ModifyIndex: idx,
      },
    ];
    const cidx = this.bump();
    this.consulService = this.finishService(
      {
        Kind: '',
        ID: 'consul',
        Service: 'consul',
        Tags: [],
        Address: '',
        TaggedAddresses: {},
        Meta: { raft_version: '3', serf_protocol_current: '2', version: '1.20.0' },
        Port: 8300,
        SocketPath: '',
        Weights: { Passing: 1, Warning: 1 },
        EnableTagOverride: false,
        Proxy: { Mode: '', MeshGateway: {}, Expose: {} },
        Connect: {},
        CreateIndex: cidx,
        ModifyIndex: cidx,
      },
      cidx,
    );
    this.servicesTableIndex = cidx;
    this.catalogIndex = cidx;
    this.serviceIndex.set('consul', cidx);
    this.reapTimer = this.o.clock.setTimeout(() => this.reap(), this.o.reapIntervalMs);
  }

  /** The server's own `consul` service: in the catalog, not among the agent's services. */
  private readonly consulService: ServiceRecord;

  // ---------------------------------------------------------------- change notification

  private bump(): number {
    this.index += 1;
    return this.index;
  }

  private notify(): void {
    for (const fn of [...this.listeners]) fn();
  }

  /** Subscribes to every state change; returns the unsubscribe function. */
  onChange(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private touchService(svc: ServiceRecord, idx: number): void {
    this.dirty.add(svc.ID);
    this.catalogIndex = idx;
    this.serviceIndex.set(svc.Service, idx);
    if (svc.Kind === 'connect-proxy' && svc.Proxy.DestinationServiceName) {
      this.connectIndex.set(svc.Proxy.DestinationServiceName, idx);
    }
    if (svc.Connect.Native) this.connectIndex.set(svc.Service, idx);
  }

  /** Runs one write transaction at a fresh index, then settles alias checks and wakes waiters. */
  private write<T>(fn: (idx: number) => T): T {
    const idx = this.bump();
    const out = fn(idx);
    this.updateAliases(idx);
    this.notify();
    return out;
  }

  // ---------------------------------------------------------------- services

  /** Agent-local services (everything but the server's own `consul` service). */
  agentServices(): ServiceRecord[] {
    return [...this.services.values()];
  }

  agentService(id: string): ServiceRecord | undefined {
    return this.services.get(id);
  }

  /** Handles PUT /v1/agent/service/register after decoding. */
  registerService(def: Record<string, unknown>, replaceExistingChecks: boolean): void {
    const name = str(def.Name);
    if (name === '') throw new HttpError(400, 'Missing service name');
    if (isAnyAddress(str(def.Address))) throw new HttpError(400, 'Invalid service address');
    const ns = this.nodeServiceFrom(def);
    const weights = rec(def.Weights);
    if (weights) {
      if (num(weights.Passing) < 1)
        throw new HttpError(400, 'Invalid Weights: Passing must be greater than 0');
      if (num(weights.Warning) < 0)
        throw new HttpError(400, 'Invalid Weights: Warning must be greater or equal than 0');
    }
    const metaProblem = validateMeta(ns.Meta);
    if (metaProblem) throw new HttpError(400, `Invalid Service Meta: ${metaProblem}`);
    const problems = this.validateNodeService(ns, def);
    if (problems.length > 0)
      throw new HttpError(400, `Validation failed: ${formatMultiError(problems)}`);
    const chkTypes = serviceCheckTypes(def);
    for (const c of chkTypes) {
      const why = validateCheckType(c);
      if (why) throw new HttpError(400, `Invalid check: ${why}`);
      if (c.Status && !VALID_STATUS.has(c.Status))
        throw new HttpError(400, "Status for checks must 'passing', 'warning', 'critical'");
    }
    const connect = rec(def.Connect);
    const sidecarDef = rec(connect?.SidecarService);
    let sidecar: { svc: ServiceRecord; checks: CheckTypeDef[] } | undefined;
    if (sidecarDef) {
      const sidecarChecks = serviceCheckTypes(sidecarDef);
      for (const c of sidecarChecks) {
        const why = validateCheckType(c);
        if (why) throw new HttpError(400, `Invalid check in sidecar_service: ${why}`);
        if (c.Status && !VALID_STATUS.has(c.Status))
          throw new HttpError(400, "Status for checks must 'passing', 'warning', 'critical'");
      }
      if (rec(rec(sidecarDef.Connect)?.SidecarService)) {
        throw new HttpError(
          400,
          `Invalid SidecarService: ${formatMultiError(['A SidecarService cannot have a nested SidecarService'])}`,
        );
      }
      sidecar = this.sidecarFrom(ns, sidecarDef, sidecarChecks);
      const sp = this.validateNodeService(sidecar.svc, sidecarDef);
      if (sp.length > 0) throw new HttpError(400, `Failed Validation: ${formatMultiError(sp)}`);
    }
    for (const c of [...chkTypes, ...(sidecar?.checks ?? [])]) {
      if ((c.ScriptArgs?.length ?? 0) > 0) {
        throw new HttpError(
          500,
          "Scripts are disabled on this agent from remote calls; to enable, configure 'enable_script_checks' to true",
        );
      }
    }
    this.write((idx) => {
      this.addService(ns, chkTypes, replaceExistingChecks, idx);
      if (sidecar) this.addService(sidecar.svc, sidecar.checks, replaceExistingChecks, idx);
    });
  }

  private nodeServiceFrom(def: Record<string, unknown>): ServiceRecord {
    const proxy = rec(def.Proxy);
    const connect = rec(def.Connect);
    const weights = rec(def.Weights);
    const tagged: Record<string, { Address: string; Port: number }> = {};
    for (const [k, v] of Object.entries(rec(def.TaggedAddresses) ?? {})) {
      const a = rec(v) ?? {};
      tagged[k] = { Address: str(a.Address), Port: num(a.Port) };
    }
    const svc: ServiceRecord = {
      Kind: str(def.Kind),
      ID: str(def.ID),
      Service: str(def.Name),
      Tags: Array.isArray(def.Tags) ? (def.Tags as string[]) : [],
      Address: str(def.Address),
      TaggedAddresses: tagged,
      Meta: { ...((rec(def.Meta) ?? {}) as Record<string, string>) },
      Port: num(def.Port),
      SocketPath: str(def.SocketPath),
      Weights: weights
        ? { Passing: num(weights.Passing), Warning: num(weights.Warning) }
        : { Passing: 1, Warning: 1 },
      EnableTagOverride: def.EnableTagOverride === true,
      Proxy: proxyFrom(proxy),
      Connect: connect?.Native === true ? { Native: true } : {},
      CreateIndex: 0,
      ModifyIndex: 0,
    };
    const loc = rec(def.Locality);
    if (loc) svc.Locality = loc;
    return svc;
  }

  private validateNodeService(ns: ServiceRecord, def: Record<string, unknown>): string[] {
    const problems: string[] = [];
    if (ns.Kind === 'connect-proxy') {
      if ((ns.Proxy.DestinationServiceName ?? '').trim() === '')
        problems.push('Proxy.DestinationServiceName must be non-empty for Connect proxy services');
      if (ns.Proxy.DestinationServiceName === '*')
        problems.push(
          'Proxy.DestinationServiceName must not be a wildcard for Connect proxy services',
        );
      if (ns.Port === 0 && ns.SocketPath === '')
        problems.push('Port or SocketPath must be set for a Connect proxy');
      if (ns.Connect.Native)
        problems.push('A Proxy cannot also be Connect Native, only typical services');
      const seen = new Set<string>();
      for (const u of ns.Proxy.Upstreams ?? []) {
        const why = validateUpstream(u);
        if (why) problems.push(why);
        const key = `${u.DestinationType}/${u.DestinationName}/${u.Datacenter}`;
        if (seen.has(key))
          problems.push(`upstreams cannot contain duplicates of ${u.DestinationName}`);
        seen.add(key);
      }
    } else if (
      ns.Kind !== '' &&
      !['mesh-gateway', 'terminating-gateway', 'ingress-gateway', 'api-gateway'].includes(ns.Kind)
    ) {
      problems.push(`Invalid service kind: "${ns.Kind}"`);
    }
    if (ns.Connect.Native && rec(rec(def.Connect)?.SidecarService))
      problems.push('A SidecarService cannot be specified on a Connect Native service');
    return problems;
  }

  /** Expands `connect.sidecar_service` (agent/sidecar_service.go). */
  private sidecarFrom(
    parent: ServiceRecord,
    def: Record<string, unknown>,
    checks: CheckTypeDef[],
  ): { svc: ServiceRecord; checks: CheckTypeDef[] } {
    const sc = this.nodeServiceFrom(def);
    sc.ID = `${parent.ID || parent.Service}${SIDECAR_SUFFIX}`;
    const parentId = parent.ID || parent.Service;
    const scMeta = rec(def.Meta);
    if (scMeta) {
      const why = validateMeta(sc.Meta);
      if (why) throw new HttpError(400, `Invalid SidecarService: ${why}`);
    }
    if (Object.keys(sc.Meta).length === 0) sc.Meta = { ...parent.Meta };
    if (sc.Tags.length === 0) sc.Tags = [...parent.Tags];
    if (sc.Kind === '') sc.Kind = 'connect-proxy';
    if (sc.Service === '') sc.Service = `${parent.Service}${SIDECAR_SUFFIX}`;
    if (sc.Address === '') sc.Address = parent.Address;
    if (!sc.Proxy.DestinationServiceName) sc.Proxy.DestinationServiceName = parent.Service;
    if (!sc.Proxy.DestinationServiceID) sc.Proxy.DestinationServiceID = parentId;
    if (
      !sc.Proxy.LocalServiceSocketPath &&
      (!sc.Proxy.LocalServiceAddress || (sc.Proxy.LocalServicePort ?? 0) < 1)
    ) {
      if (parent.SocketPath) sc.Proxy.LocalServiceSocketPath = parent.SocketPath;
      else {
        if (!sc.Proxy.LocalServiceAddress) sc.Proxy.LocalServiceAddress = '127.0.0.1';
        if ((sc.Proxy.LocalServicePort ?? 0) < 1) sc.Proxy.LocalServicePort = parent.Port;
      }
    }
    sc.sidecarOf = parentId;
    if (sc.Port < 1) {
      sc.Port = this.allocateSidecarPort(sc.ID);
      sc.autoPort = true;
    }
    let outChecks = checks;
    if (outChecks.length === 0) {
      const checkAddress = sc.Address || sc.Proxy.LocalServiceAddress || '';
      const hostPort = checkAddress.includes(':')
        ? `[${checkAddress}]:${sc.Port}`
        : `${checkAddress}:${sc.Port}`;
      outChecks = [
        { Name: 'Connect Sidecar Listening', TCP: hostPort, Interval: 10_000 * NS_PER_MS },
        { Name: `Connect Sidecar Aliasing ${parentId}`, AliasService: parentId },
      ];
    }
    return { svc: sc, checks: outChecks };
  }

  /** Lowest free port of the sidecar range, or the one this sidecar already holds. */
  private allocateSidecarPort(sidecarId: string): number {
    const { sidecarMinPort: min, sidecarMaxPort: max } = this.o;
    const used = new Set<number>();
    for (const s of this.services.values()) {
      if (s.Port >= min && s.Port <= max) {
        if (s.ID === sidecarId) return s.Port;
        used.add(s.Port);
      }
    }
    for (let p = min; p <= max; p++) if (!used.has(p)) return p;
    throw new HttpError(
      400,
      `Invalid SidecarService: no port provided for sidecar_service and none left in the configured range [${min}, ${max}]`,
    );
  }

  private finishService(svc: ServiceRecord, idx: number): ServiceRecord {
    if (svc.ID === '') svc.ID = svc.Service;
    // agent.go: default tagged addresses for an IP service address.
    const ip4 = /^\d{1,3}(\.\d{1,3}){3}$/.test(svc.Address);
    const ip6 = !ip4 && svc.Address.includes(':');
    if (ip4 || ip6) {
      const fam = ip4 ? 'ipv4' : 'ipv6';
      for (const k of [`lan_${fam}`, `wan_${fam}`]) {
        if (!svc.TaggedAddresses[k])
          svc.TaggedAddresses[k] = { Address: svc.Address, Port: svc.Port };
      }
    }
    svc.CreateIndex = idx;
    svc.ModifyIndex = idx;
    return svc;
  }

  private addService(
    input: ServiceRecord,
    chkTypes: CheckTypeDef[],
    replaceExistingChecks: boolean,
    idx: number,
  ): void {
    const svc = this.finishService(input, idx);
    const prev = this.services.get(svc.ID);
    if (prev) {
      svc.CreateIndex = prev.CreateIndex;
      if (prev.Service !== svc.Service) this.touchService(prev, idx);
    }
    this.services.set(svc.ID, svc);
    this.servicesTableIndex = idx;
    this.touchService(svc, idx);
    if (prev && prev.Kind === 'connect-proxy' && prev.Proxy.DestinationServiceName)
      this.connectIndex.set(prev.Proxy.DestinationServiceName, idx);

    const newIds = new Set<string>();
    chkTypes.forEach((ct, i) => {
      let checkId = ct.CheckID ?? '';
      if (checkId === '') {
        checkId = `service:${svc.ID}`;
        if (chkTypes.length > 1) checkId += `:${i + 1}`;
      }
      newIds.add(checkId);
      this.addCheckLocked(
        {
          ...ct,
          CheckID: checkId,
          Name: ct.Name || `Service '${svc.Service}' check`,
        },
        svc,
        idx,
      );
    });
    // Existing checks of the service keep their place unless replace-existing-checks asks
    // otherwise; their tags follow the service.
    for (const st of this.checks.ofService(svc.ID)) {
      const id = st.rec.CheckID;
      if (newIds.has(id)) continue;
      if (replaceExistingChecks && !id.startsWith(SERVICE_MAINT_PREFIX)) {
        this.dropCheck(id);
      } else {
        st.rec.ServiceName = svc.Service;
        st.rec.ServiceTags = [...svc.Tags];
        st.rec.ModifyIndex = idx;
      }
    }
  }

  private addCheckLocked(
    ct: CheckTypeDef & { CheckID: string; Name: string },
    svc: ServiceRecord | undefined,
    idx: number,
  ): void {
    const prev = this.checks.get(ct.CheckID);
    let status: HealthStatus = (ct.Status as HealthStatus | undefined) ?? 'critical';
    let output = '';
    if (prev) {
      // agent.go restores status and output from the snapshot taken before re-registration.
      status = prev.rec.Status;
      output = prev.rec.Output;
      this.stopCheck(prev);
    }
    const interval = ct.Interval ?? 0;
    const timeout = ct.Timeout ?? 0;
    const definition: Record<string, unknown> = {};
    if (ct.HTTP) definition.HTTP = ct.HTTP;
    if (ct.TCP) definition.TCP = ct.TCP;
    if (ct.Interval) definition.Interval = formatGoDuration(interval);
    if (ct.Timeout) definition.Timeout = formatGoDuration(timeout);
    if (ct.TTL) definition.TTL = formatGoDuration(ct.TTL);
    if (ct.DeregisterCriticalServiceAfter)
      definition.DeregisterCriticalServiceAfter = formatGoDuration(
        ct.DeregisterCriticalServiceAfter,
      );
    const r: CheckRecord = {
      Node: this.node.Node,
      CheckID: ct.CheckID,
      Name: ct.Name,
      Status: status,
      Notes: ct.Notes ?? '',
      Output: output,
      ServiceID: svc?.ID ?? '',
      ServiceName: svc?.Service ?? '',
      ServiceTags: svc ? [...svc.Tags] : [],
      Type: checkTypeName(ct),
      Interval: interval ? formatGoDuration(interval) : '',
      Timeout: timeout ? formatGoDuration(timeout) : '',
      ExposedPort: 0,
      Definition: definition,
      CreateIndex: prev?.rec.CreateIndex ?? idx,
      ModifyIndex: idx,
    };
    const st: CheckState = {
      rec: r,
      def: ct,
      lastOutput: prev?.lastOutput ?? '',
      successes: 0,
      failures: 0,
      running: true,
      ...(status === 'critical'
        ? { criticalSince: prev?.criticalSince ?? this.o.clock.now() }
        : {}),
    };
    this.checks.set(ct.CheckID, st);
    if (st.def.AliasService) this.pendingAlias.add(ct.CheckID);
    this.startCheck(st);
  }

  /** Handles PUT /v1/agent/service/deregister/:id. */
  deregisterService(id: string): void {
    if (!this.services.has(id)) throw unknownService(id);
    this.write((idx) => this.removeServiceLocked(id, idx));
  }

  private removeServiceLocked(id: string, idx: number): void {
    const svc = this.services.get(id);
    if (!svc) return;
    this.services.delete(id);
    this.servicesTableIndex = idx;
    this.touchService(svc, idx);
    for (const st of this.checks.ofService(id)) {
      this.stopCheck(st);
      this.checks.delete(st.rec.CheckID);
    }
    // A sidecar registered through this service's definition goes with it.
    const sidecar = this.services.get(`${id}${SIDECAR_SUFFIX}`);
    if (sidecar?.sidecarOf === id) this.removeServiceLocked(sidecar.ID, idx);
  }

  /** Handles PUT /v1/agent/service/maintenance/:id. */
  setMaintenance(id: string, enable: boolean, reason: string): void {
    const svc = this.services.get(id);
    if (!svc) throw unknownService(id);
    const cid = `${SERVICE_MAINT_PREFIX}${id}`;
    if (enable) {
      if (this.checks.has(cid)) return;
      this.write((idx) => {
        const r: CheckRecord = {
          Node: this.node.Node,
          CheckID: cid,
          Name: 'Service Maintenance Mode',
          Status: 'critical',
          Notes: reason || MAINTENANCE_DEFAULT_REASON,
          Output: '',
          ServiceID: id,
          ServiceName: svc.Service,
          ServiceTags: [...svc.Tags],
          Type: 'maintenance',
          Interval: '',
          Timeout: '',
          ExposedPort: 0,
          Definition: {},
          CreateIndex: idx,
          ModifyIndex: idx,
        };
        this.checks.set(cid, {
          rec: r,
          def: {},
          lastOutput: '',
          successes: 0,
          failures: 0,
          running: false,
        });
        this.touchService(svc, idx);
      });
    } else {
      if (!this.checks.has(cid)) return;
      this.write((idx) => {
        this.checks.delete(cid);
        this.touchService(svc, idx);
      });
    }
  }

  // ---------------------------------------------------------------- checks

  agentChecks(): CheckRecord[] {
    return [...this.checks.values()].map((s) => s.rec);
  }

  /** Handles PUT /v1/agent/check/register after decoding. */
  registerCheck(def: Record<string, unknown>): void {
    const name = str(def.Name);
    if (name === '') throw new HttpError(400, 'Missing check name');
    const status = str(def.Status);
    if (status !== '' && !VALID_STATUS.has(status)) throw new HttpError(400, 'Bad check status');
    const ct = def as CheckTypeDef;
    const why = validateCheckType(ct);
    if (why) throw new HttpError(400, `Invalid check: ${why}`);
    const serviceId = str(def.ServiceID);
    const svc = serviceId ? this.services.get(serviceId) : undefined;
    if (serviceId && !svc)
      throw new HttpError(404, `ServiceID ${JSON.stringify(serviceId)} does not exist`);
    if ((ct.ScriptArgs?.length ?? 0) > 0) {
      throw new HttpError(
        500,
        "Scripts are disabled on this agent from remote calls; to enable, configure 'enable_script_checks' to true",
      );
    }
    const id = str(def.ID) || name;
    this.write((idx) => {
      this.addCheckLocked({ ...ct, CheckID: id, Name: name }, svc, idx);
      if (svc) this.touchService(svc, idx);
    });
  }

  /** Handles PUT /v1/agent/check/deregister/:id. */
  deregisterCheck(id: string): void {
    const st = this.checks.get(id);
    if (!st) throw unknownCheck(id);
    this.write((idx) => {
      this.dropCheck(id);
      const svc = this.services.get(st.rec.ServiceID);
      if (svc) this.touchService(svc, idx);
    });
  }

  private dropCheck(id: string): void {
    const st = this.checks.get(id);
    if (!st) return;
    this.stopCheck(st);
    this.checks.delete(id);
  }

  /** Handles PUT /v1/agent/check/{pass,warn,fail,update}/:id. */
  updateTtl(id: string, status: HealthStatus, output: string): void {
    const st = this.checks.get(id);
    // vetCheckUpdateWithAuthorizer answers 404 for an unknown ID; updateTTLCheck's plain error
    // for a check that is not a TTL check becomes a 500.
    if (!st) throw unknownCheck(id);
    if (st.rec.Type !== 'ttl') {
      throw new HttpError(500, `CheckID ${JSON.stringify(id)} does not have associated TTL`);
    }
    const capped = capOutput(output, st.def.OutputMaxSize || DEFAULT_OUTPUT_MAX_SIZE);
    st.lastOutput = capped;
    this.armTtl(st);
    this.applyResult(st, { status, output: capped });
  }

  private startCheck(st: CheckState): void {
    const t = st.rec.Type;
    if (t === 'ttl') this.armTtl(st);
    else if (t === 'http' || t === 'tcp') {
      const interval = (st.def.Interval ?? 0) / NS_PER_MS;
      // Consul staggers the first run randomly within the interval.
      const first = Math.floor(this.o.random() * interval);
      st.timer = this.o.clock.setTimeout(() => void this.runProbe(st), first);
    }
  }

  private stopCheck(st: CheckState): void {
    st.running = false;
    if (st.timer) this.o.clock.clearTimeout(st.timer);
    st.timer = undefined;
  }

  private armTtl(st: CheckState): void {
    if (st.timer) this.o.clock.clearTimeout(st.timer);
    st.timer = this.o.clock.setTimeout(
      () => {
        if (!st.running || this.closed) return;
        const out = st.lastOutput
          ? `TTL expired (last output before timeout follows): ${st.lastOutput}`
          : 'TTL expired';
        this.setCheckStatus(st, 'critical', out);
      },
      (st.def.TTL ?? 0) / NS_PER_MS,
    );
  }

  private async runProbe(st: CheckState): Promise<void> {
    if (!st.running || this.closed) return;
    const d = st.def;
    const timeoutMs = d.Timeout ? d.Timeout / NS_PER_MS : DEFAULT_CHECK_TIMEOUT_MS;
    const max = d.OutputMaxSize || DEFAULT_OUTPUT_MAX_SIZE;
    let result: ProbeResult;
    try {
      result =
        st.rec.Type === 'http'
          ? await probeHttp({
              url: d.HTTP ?? '',
              ...(d.Method ? { method: d.Method } : {}),
              ...(d.Header ? { header: d.Header } : {}),
              ...(d.Body ? { body: d.Body } : {}),
              timeoutMs,
              ...(d.TLSSkipVerify ? { tlsSkipVerify: true } : {}),
              ...(d.TLSServerName ? { tlsServerName: d.TLSServerName } : {}),
              outputMaxSize: max,
            })
          : await probeTcp(d.TCP ?? '', timeoutMs);
    } catch (err) {
      result = { status: 'critical', output: (err as Error).message };
    }
    if (!st.running || this.closed) return;
    this.applyResult(st, result);
    st.timer = this.o.clock.setTimeout(() => void this.runProbe(st), (d.Interval ?? 0) / NS_PER_MS);
  }

  /** Consul's StatusHandler: success/failure thresholds before a status flips. */
  private applyResult(st: CheckState, r: ProbeResult): void {
    const d = st.def;
    if (r.status === 'passing' || r.status === 'warning') {
      st.successes += 1;
      st.failures = 0;
      if (st.successes >= (d.SuccessBeforePassing ?? 0))
        this.setCheckStatus(st, r.status, r.output);
      else this.setCheckStatus(st, st.rec.Status, r.output);
      return;
    }
    st.successes = 0;
    st.failures += 1;
    const beforeCritical = d.FailuresBeforeCritical ?? 0;
    const beforeWarning = d.FailuresBeforeWarning || beforeCritical;
    if (st.failures >= beforeCritical) this.setCheckStatus(st, 'critical', r.output);
    else if (st.failures >= beforeWarning) this.setCheckStatus(st, 'warning', r.output);
    else this.setCheckStatus(st, st.rec.Status, r.output);
  }

  private setCheckStatus(st: CheckState, status: HealthStatus, output: string): void {
    if (this.checks.get(st.rec.CheckID) !== st) return;
    if (st.rec.Status === status) {
      // An output-only change is not synced to the servers at once (check_update_interval),
      // so it does not move the index.
      st.rec.Output = output;
      return;
    }
    this.write((idx) => {
      st.rec.Status = status;
      st.rec.Output = output;
      st.rec.ModifyIndex = idx;
      if (status === 'critical') st.criticalSince = this.o.clock.now();
      else delete st.criticalSince;
      const svc = this.services.get(st.rec.ServiceID);
      if (svc) this.touchService(svc, idx);
    });
  }

  /**
   * Alias checks mirror the worst status of the aliased service's checks (and the node's).
   * Only alias checks added in this write or aiming at a service it touched are evaluated.
   */
  private updateAliases(idx: number): void {
    for (let round = 0; round < 4; round++) {
      const candidates = new Set(this.pendingAlias);
      this.pendingAlias.clear();
      for (const target of this.dirty) {
        for (const id of this.checks.aliasByTarget.get(target) ?? []) candidates.add(id);
      }
      this.dirty.clear();
      if (candidates.size === 0) return;
      for (const id of candidates) {
        const st = this.checks.get(id);
        if (!st || !st.def.AliasService) continue;
        const target = st.def.AliasService;
        let status: HealthStatus;
        let output: string;
        if (!this.services.has(target)) {
          status = 'critical';
          output = 'Service not found';
        } else {
          const relevant = [...this.nodeChecks, ...this.checks.ofService(target).map((c) => c.rec)];
          status = 'passing';
          output = 'All checks passing.';
          if (relevant.length === this.nodeChecks.length) output = 'No checks found.';
          for (const c of relevant) {
            if (statusRank(c.Status) > statusRank(status)) {
              status = c.Status;
              output = `Aliased check ${JSON.stringify(c.Name)} failing: ${c.Output}`;
            }
          }
        }
        if (st.rec.Status !== status) {
          st.rec.Status = status;
          st.rec.Output = output;
          st.rec.ModifyIndex = idx;
          if (status === 'critical') st.criticalSince = this.o.clock.now();
          else delete st.criticalSince;
          const svc = this.services.get(st.rec.ServiceID);
          if (svc) this.touchService(svc, idx);
        } else {
          st.rec.Output = output;
        }
      }
    }
    this.dirty.clear();
  }

  /** deregister_critical_service_after: the reaper runs every reapIntervalMs. */
  private reap(): void {
    if (this.closed) return;
    const now = this.o.clock.now();
    const doomed = new Set<string>();
    for (const st of this.checks.values()) {
      const after = (st.def.DeregisterCriticalServiceAfter ?? 0) / NS_PER_MS;
      if (after <= 0 || st.rec.Status !== 'critical' || st.criticalSince === undefined) continue;
      const timeout = Math.max(after, this.o.deregisterMinMs);
      if (now - st.criticalSince > timeout && st.rec.ServiceID) doomed.add(st.rec.ServiceID);
    }
    if (doomed.size > 0) {
      this.write((idx) => {
        for (const id of doomed) {
          this.o.logger.info(
            { serviceId: id },
            'deregistering service whose check stayed critical',
          );
          this.removeServiceLocked(id, idx);
        }
      });
    }
    this.reapTimer = this.o.clock.setTimeout(() => this.reap(), this.o.reapIntervalMs);
  }

  // ---------------------------------------------------------------- reads (catalog / health)

  /** All catalog instances, the server's own `consul` service included. */
  private catalogServices(): ServiceRecord[] {
    return [this.consulService, ...this.services.values()];
  }

  checksOf(svc: ServiceRecord): CheckRecord[] {
    const out = [...this.nodeChecks];
    for (const c of this.checks.ofService(svc.ID)) out.push(c.rec);
    return out;
  }

  /** Index of a service's health/catalog view (maxIndexForService). */
  serviceViewIndex(name: string): number {
    const exists = name === 'consul' || this.services.byName.has(name);
    if (exists) return this.serviceIndex.get(name) ?? this.catalogIndex;
    return this.catalogIndex;
  }

  connectViewIndex(name: string): number {
    const exists = this.services.byDest.has(name);
    if (exists) return this.connectIndex.get(name) ?? this.catalogIndex;
    return this.catalogIndex;
  }

  instances(name: string): ServiceRecord[] {
    const own = this.services.pick(this.services.byName.get(name));
    return name === 'consul' ? [this.consulService, ...own] : own;
  }

  /** Connect-capable instances for a destination: its proxies and Connect-native instances. */
  connectInstances(name: string): ServiceRecord[] {
    return this.services.pick(this.services.byDest.get(name));
  }

  /** Index of /v1/catalog/services: moves on service registration and removal only. */
  servicesIndex(): number {
    return this.servicesTableIndex;
  }

  servicesTable(): { index: number; services: Record<string, string[]> } {
    const out: Record<string, string[]> = {};
    for (const s of this.catalogServices()) {
      const tags = (out[s.Service] ??= []);
      for (const t of s.Tags) if (!tags.includes(t)) tags.push(t);
    }
    const sorted: Record<string, string[]> = {};
    for (const k of Object.keys(out).sort()) sorted[k] = out[k] ?? [];
    return { index: this.servicesTableIndex, services: sorted };
  }

  /** Index of the checks table: any catalog write that can change a check. */
  checksIndex(): number {
    return this.catalogIndex;
  }

  nodeChecksList(): CheckRecord[] {
    return this.nodeChecks;
  }

  // ---------------------------------------------------------------- KV

  private toEntry(e: KvStored): KvEntry {
    return {
      LockIndex: 0,
      Key: e.key,
      Flags: e.flags,
      Value: e.value && e.value.length > 0 ? e.value.toString('base64') : null,
      CreateIndex: e.createIndex,
      ModifyIndex: e.modifyIndex,
    };
  }

  kvGet(key: string): { index: number; entry?: KvEntry; raw?: Buffer } {
    const e = this.kv.get(key);
    if (e) return { index: e.modifyIndex, entry: this.toEntry(e), raw: e.value ?? Buffer.alloc(0) };
    return { index: Math.max(this.kvTableIndex, 1) };
  }

  private kvPrefixIndex(prefix: string, entries: KvStored[]): number {
    if (prefix === '') return Math.max(this.kvTableIndex, 1);
    let idx = 0;
    for (const e of entries) idx = Math.max(idx, e.modifyIndex);
    for (const [k, i] of this.kvTombstones) if (k.startsWith(prefix)) idx = Math.max(idx, i);
    return idx === 0 ? Math.max(this.kvTableIndex, 1) : idx;
  }

  private kvPrefix(prefix: string): KvStored[] {
    return [...this.kv.values()]
      .filter((e) => e.key.startsWith(prefix))
      .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  kvList(prefix: string): { index: number; entries: KvEntry[] } {
    const entries = this.kvPrefix(prefix);
    return {
      index: this.kvPrefixIndex(prefix, entries),
      entries: entries.map((e) => this.toEntry(e)),
    };
  }

  kvKeys(prefix: string, separator: string): { index: number; keys: string[] } {
    const entries = this.kvPrefix(prefix);
    const keys: string[] = [];
    for (const e of entries) {
      let k = e.key;
      if (separator) {
        const rest = k.slice(prefix.length);
        const at = rest.indexOf(separator);
        if (at >= 0) k = prefix + rest.slice(0, at + separator.length);
      }
      if (keys[keys.length - 1] !== k) keys.push(k);
    }
    return { index: this.kvPrefixIndex(prefix, entries), keys };
  }

  kvPut(key: string, value: Buffer, flags: number, cas: number | undefined): boolean {
    const existing = this.kv.get(key);
    if (cas !== undefined) {
      if (cas === 0 && existing) return false;
      if (cas !== 0 && (!existing || existing.modifyIndex !== cas)) return false;
    }
    this.write((idx) => {
      this.kv.set(key, {
        key,
        flags,
        value: value.length > 0 ? value : null,
        createIndex: existing?.createIndex ?? idx,
        modifyIndex: idx,
      });
      this.kvTombstones.delete(key);
      this.kvTableIndex = idx;
    });
    return true;
  }

  kvDelete(key: string, recurse: boolean, cas: number | undefined): boolean {
    if (cas !== undefined && !recurse) {
      const e = this.kv.get(key);
      if (!e) return true;
      if (e.modifyIndex !== cas) return false;
    }
    this.write((idx) => {
      const doomed = recurse ? this.kvPrefix(key).map((e) => e.key) : this.kv.has(key) ? [key] : [];
      for (const k of doomed) {
        this.kv.delete(k);
        this.kvTombstones.set(k, idx);
      }
      this.kvTableIndex = idx;
    });
    return true;
  }

  // ---------------------------------------------------------------- config entries

  /** The index of a kind's table: its last write, or the catalog's first index. */
  configKindIndex(kind: ConfigKind): number {
    return Math.max(this.configIndex.get(kind) ?? 0, 1);
  }

  configGet(kind: ConfigKind, name: string): ConfigEntryRecord | undefined {
    const e = this.config.get(kind)?.get(name);
    return e ? structuredClone(e) : undefined;
  }

  /** A kind's entries sorted by name, as Consul lists them. */
  configList(kind: ConfigKind): ConfigEntryRecord[] {
    return [...(this.config.get(kind)?.values() ?? [])]
      .sort((a, b) => (a.Name < b.Name ? -1 : a.Name > b.Name ? 1 : 0))
      .map((e) => structuredClone(e));
  }

  /** Stores an entry; with `cas`, only when 0 and absent, or equal to its ModifyIndex. */
  configPut(
    entry: Record<string, unknown> & { Kind: ConfigKind; Name: string },
    cas: number | undefined,
  ): boolean {
    const table = this.config.get(entry.Kind) ?? new Map<string, ConfigEntryRecord>();
    const existing = table.get(entry.Name);
    if (cas !== undefined) {
      if (cas === 0 && existing) return false;
      if (cas !== 0 && existing?.ModifyIndex !== cas) return false;
    }
    this.write((idx) => {
      table.set(entry.Name, {
        ...structuredClone(entry),
        CreateIndex: existing?.CreateIndex ?? idx,
        ModifyIndex: idx,
      });
      this.config.set(entry.Kind, table);
      this.configIndex.set(entry.Kind, idx);
    });
    return true;
  }

  /** Deletes an entry; with `cas`, only when it equals the entry's ModifyIndex. */
  configDelete(kind: ConfigKind, name: string, cas: number | undefined): boolean {
    const existing = this.config.get(kind)?.get(name);
    if (cas !== undefined && existing?.ModifyIndex !== cas) return false;
    if (!existing) return true;
    this.write((idx) => {
      this.config.get(kind)!.delete(name);
      this.configIndex.set(kind, idx);
    });
    return true;
  }

  // ---------------------------------------------------------------- lifecycle

  /** A content hash of an agent service, for hash-based blocking on /v1/agent/service/:id. */
  static contentHash(value: unknown): string {
    return createHash('sha256').update(JSON.stringify(value)).digest('hex').slice(0, 16);
  }

  close(): void {
    this.closed = true;
    if (this.reapTimer) this.o.clock.clearTimeout(this.reapTimer);
    for (const st of this.checks.values()) this.stopCheck(st);
    this.notify();
    this.listeners.clear();
  }

  get isClosed(): boolean {
    return this.closed;
  }
}

function proxyFrom(p: Record<string, unknown> | undefined): WireProxy {
  // Field order follows structs.ConnectProxyConfig; the sidecar defaults fill the first four.
  const out: WireProxy = {
    DestinationServiceName: str(p?.DestinationServiceName),
    DestinationServiceID: str(p?.DestinationServiceID),
    LocalServiceAddress: str(p?.LocalServiceAddress),
    LocalServicePort: num(p?.LocalServicePort),
    Mode: str(p?.Mode),
    MeshGateway: {},
    Expose: {},
  };
  if (p?.LocalServiceSocketPath) out.LocalServiceSocketPath = str(p.LocalServiceSocketPath);
  if (!p) return out;
  if (rec(p.Config)) out.Config = rec(p.Config);
  const mg = rec(p.MeshGateway);
  if (mg && mg.Mode) out.MeshGateway = { Mode: mg.Mode };
  const ex = rec(p.Expose);
  if (ex && Object.keys(ex).length > 0) out.Expose = ex;
  const tp = rec(p.TransparentProxy);
  if (tp && Object.keys(tp).length > 0) out.TransparentProxy = tp;
  const al = rec(p.AccessLogs);
  if (al && Object.keys(al).length > 0) out.AccessLogs = al;
  if (Array.isArray(p.Upstreams) && p.Upstreams.length > 0) {
    out.Upstreams = p.Upstreams.map((raw) => {
      const u = rec(raw) ?? {};
      const up: WireUpstream = {
        DestinationType: str(u.DestinationType) || 'service',
        DestinationName: str(u.DestinationName),
        Datacenter: str(u.Datacenter),
        MeshGateway: {},
      };
      if (u.DestinationNamespace) up.DestinationNamespace = str(u.DestinationNamespace);
      if (u.DestinationPartition) up.DestinationPartition = str(u.DestinationPartition);
      if (u.DestinationPeer) up.DestinationPeer = str(u.DestinationPeer);
      if (u.LocalBindAddress) up.LocalBindAddress = str(u.LocalBindAddress);
      if (u.LocalBindPort) up.LocalBindPort = num(u.LocalBindPort);
      if (u.LocalBindSocketPath) up.LocalBindSocketPath = str(u.LocalBindSocketPath);
      if (u.LocalBindSocketMode) up.LocalBindSocketMode = str(u.LocalBindSocketMode);
      if (rec(u.Config)) up.Config = rec(u.Config);
      const umg = rec(u.MeshGateway);
      if (umg && umg.Mode) up.MeshGateway = { Mode: umg.Mode };
      return up;
    });
  }
  return out;
}

/** agent.vetServiceUpdateWithAuthorizer's answer for an unknown service. */
function unknownService(id: string): HttpError {
  return new HttpError(
    404,
    `Unknown service ID ${JSON.stringify(id)}. Ensure that the service ID is passed, not the service name.`,
  );
}

/** agent.vetCheckUpdateWithAuthorizer's answer for an unknown check. */
function unknownCheck(id: string): HttpError {
  return new HttpError(
    404,
    `Unknown check ID ${JSON.stringify(id)}. Ensure that the check ID is passed, not the check name.`,
  );
}

function validateUpstream(u: WireUpstream): string | undefined {
  if (u.DestinationType !== 'service' && u.DestinationType !== 'prepared_query')
    return `unknown upstream destination type: ${JSON.stringify(u.DestinationType)}`;
  if (u.DestinationName === '') return 'upstream destination name cannot be empty';
  if (u.DestinationName === '*') return 'upstream destination name cannot be a wildcard';
  if (u.DestinationPeer && u.Datacenter)
    return 'upstream cannot specify both destination peer and datacenter';
  if (!u.LocalBindPort && !u.LocalBindSocketPath)
    return 'upstream local bind port or local socket path must be defined and nonzero';
  if (u.LocalBindPort && u.LocalBindSocketPath)
    return 'only one of upstream local bind port or local socket path can be defined and nonzero';
  return undefined;
}
