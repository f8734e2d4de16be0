// The mesh authority: CA signer, roots, intentions and node tokens served over NATS in the queue
// group `remora-control`. All state lives in Consul KV; replicas are stateless and agree through
// check-and-set writes.
import { SpanKind, SpanStatusCode, type Context, type Tracer } from '@opentelemetry/api';
import { RemoraError, toRemoraError } from '../lib/errors/index.ts';
import { formatSpiffeId } from '../lib/identity/index.ts';
import {
  intentionJwtProviders,
  type Intention,
  type IntentionsSnapshot,
} from '../lib/intentions/index.ts';
import { servedProtocol } from '../lib/consul/protocol.ts';
import { ingressDnsSans } from '../lib/consul/ingress-sans.ts';
import { logError, type Logger } from '../lib/log/index.ts';
import {
  CONTROL_QUEUE_GROUP,
  decodeCaRotateRequestV1,
  decodeEmptyRequestV1,
  decodeIntentionDeleteRequestV1,
  decodeIntentionUpsertRequestV1,
  decodeIntentionsPolicyRequestV1,
  decodeSignRequestV1,
  decodeTokenCreateRequestV1,
  encodeErrorReply,
  encodeMessage,
  subjects,
  subscribeIntentionsChanged,
  traceContextFromHeaders,
  type ControlSubjects,
  type IntentionsSnapshotV1,
  type MsgHdrs,
  type NatsConnection,
  type RootsV1,
  type SignRequestV1,
  type SignResponseV1,
  type Subscription,
  type TokenCreateResponseV1,
} from '../lib/nats/index.ts';
import { issueLeaf, parseCsr } from '../lib/pki/index.ts';
import { backoffDelay, type Clock } from '../lib/util/index.ts';
import {
  activeRoot,
  createCaState,
  decodeCaState,
  rootsMessage,
  rotateCaState,
  type CaState,
} from './ca-state.ts';
import { consulUnavailable, type CatalogServiceEntry, type ControlConsul } from './consul.ts';
import {
  decodeIntentionsDoc,
  deleteFromDoc,
  emptyIntentionsDoc,
  upsertInDoc,
} from './intentions-store.ts';
import { loadOrCreateDoc, readDoc, updateDoc } from './kv-state.ts';
import { createControlMetrics, startMetricsServer, type ControlMetrics } from './metrics.ts';
import {
  createNodeToken,
  createTokenSecretDoc,
  decodeTokenSecretDoc,
  operatorTokenMatches,
  serviceMatchesGlobs,
  verifyNodeToken,
} from './tokens.ts';

export const MIN_RSA_BITS = 2048;
export const MAX_RSA_BITS = 4096;
export const DEFAULT_REFRESH_INTERVAL_MS = 30_000;
/** Consul Meta key naming the node an instance runs on. */
export const NODE_META_KEY = 'remora-node';
export const INGRESS_GATEWAY_KIND = 'ingress-gateway';

/** The keys of the control config this module reads (the loaded convict object satisfies it). */
export interface ControlConfig {
  datacenter: string;
  kvPrefix: string;
  leafTtlHours: number;
  /** Overrides leafTtlHours when set and non-zero (short-lived test meshes). */
  leafTtlSeconds?: number;
  rootTtlDays: number;
  operatorToken: string;
  defaultPolicy: 'allow' | 'deny';
  auditMode: boolean;
  refreshIntervalMs?: number;
  metricsPort?: number;
  /**
   * Consul's DNS domains (its `domain`, then `alt_domain`): the wildcard names an ingress
   * gateway's certificate may carry. Default `['consul']`.
   */
  consulDnsDomains?: readonly string[];
}

export interface ControlTracing {
  tracer: Tracer;
  extract(headers: Record<string, string>): Context;
}

export interface CreateControlOptions {
  config: ControlConfig;
  nats: NatsConnection;
  consul: ControlConsul;
  clock: Clock;
  logger: Logger;
  /** Spans per request, parented on the caller's trace context from NATS headers. */
  tracing?: ControlTracing;
  /** For backoff jitter; Math.random in production. */
  random?: () => number;
}

export interface Control {
  /** Loads or creates the CA, token secret and intentions, then serves. Retries Consul until ready. */
  start(): Promise<void>;
  /** Stops serving (in-flight requests finish), stops timers and the metrics listener. */
  stop(): Promise<void>;
  readonly metrics: ControlMetrics;
  /** Port of the metrics listener once started (undefined when disabled). */
  readonly metricsPort: number | undefined;
  /** Current public roots (after start). */
  roots(): RootsV1;
}

interface Loaded {
  ca: CaState;
  secret: Buffer;
  intentions: IntentionsSnapshot;
}

type Handler = (data: Uint8Array, headers: MsgHdrs | undefined) => Promise<object> | object;

/** How long an intention upsert waits for Consul to tell whether to warn about it. */
const INTENTION_WARNING_LOOKUP_MS = 1500;

export function createControl(options: CreateControlOptions): Control {
  const { config, nats: nc, consul, clock, logger } = options;
  const random = options.random ?? Math.random;
  const s: ControlSubjects = subjects(config.datacenter);
  const prefix = config.kvPrefix.endsWith('/') ? config.kvPrefix : `${config.kvPrefix}/`;
  const keys = {
    ca: `${prefix}ca`,
    secret: `${prefix}token-secret`,
    intentions: `${prefix}intentions`,
  } as const;
  const leafTtlMs = config.leafTtlSeconds
    ? config.leafTtlSeconds * 1000
    : config.leafTtlHours * 3600_000;
  const rootTtlMs = config.rootTtlDays * 86400_000;
  const refreshIntervalMs = config.refreshIntervalMs ?? DEFAULT_REFRESH_INTERVAL_MS;
  const metrics = createControlMetrics();
  const subs: Subscription[] = [];
  const inflight = new Set<Promise<void>>();
  let state: Loaded | undefined;
  let stopped = false;
  let refreshTimer: NodeJS.Timeout | undefined;
  let metricsServer: { port: number; close(): Promise<void> } | undefined;

  function loaded(): Loaded {
    if (!state)
      throw new RemoraError(
        'REMORA_E_CONTROL_NOT_READY',
        'control is still loading its CA and state from Consul; retry in a moment',
      );
    return state;
  }

  function requireOperator(given: string, what: string): void {
    if (!operatorTokenMatches(config.operatorToken, given))
      throw new RemoraError(
        'REMORA_E_CONTROL_OPERATOR_UNAUTHORIZED',
        config.operatorToken
          ? `${what} refused: wrong operator token; set REMORA_CLI_OPERATOR_TOKEN to control's operatorToken`
          : `${what} refused: control has no operatorToken configured; set REMORA_CONTROL_OPERATOR_TOKEN`,
        { request: what },
      );
  }

  // ------------------------------------------------------------ loading

  async function loadAll(): Promise<Loaded> {
    const now = clock.now();
    const secretDoc = await loadOrCreateDoc(
      consul.kv,
      keys.secret,
      decodeTokenSecretDoc,
      createTokenSecretDoc,
    );
    if (secretDoc.created)
      logger.info({ key: keys.secret }, 'created node-token secret in Consul KV');
    const ca = await loadOrCreateDoc(consul.kv, keys.ca, decodeCaState, () =>
      createCaState(now, rootTtlMs),
    );
    if (ca.created)
      logger.info(
        { key: keys.ca, trustDomain: ca.value.trustDomain, rootId: ca.value.activeRootId },
        'created a new CA in Consul KV',
      );
    else
      logger.info(
        { trustDomain: ca.value.trustDomain, rootId: ca.value.activeRootId },
        'loaded CA from Consul KV',
      );
    const intentions = await loadOrCreateDoc(consul.kv, keys.intentions, decodeIntentionsDoc, () =>
      emptyIntentionsDoc(config.defaultPolicy, config.auditMode),
    );
    return {
      ca: ca.value,
      secret: Buffer.from(secretDoc.value.secret, 'base64'),
      intentions: intentions.value,
    };
  }

  async function reloadCa(): Promise<void> {
    const doc = await readDoc(consul.kv, keys.ca, decodeCaState);
    if (doc && state && doc.value.activeRootId !== state.ca.activeRootId) {
      logger.info(
        { rootId: doc.value.activeRootId },
        'CA changed in Consul KV; using the new active root',
      );
    }
    if (doc && state) state.ca = doc.value;
  }

  async function reloadIntentions(): Promise<IntentionsSnapshot> {
    const doc = await readDoc(consul.kv, keys.intentions, decodeIntentionsDoc);
    const st = loaded();
    if (doc && doc.value.revision >= st.intentions.revision) st.intentions = doc.value;
    return st.intentions;
  }

  // ------------------------------------------------------------ handlers

  async function checkCatalog(service: string, node: string): Promise<CatalogServiceEntry[]> {
    let entries;
    try {
      entries = await consul.catalog.service(service);
    } catch (err) {
      throw consulUnavailable(err, `list instances of ${service} in the Consul catalog`);
    }
    const mine = entries.filter((e) => e.ServiceMeta?.[NODE_META_KEY] === node);
    if (mine.length === 0)
      throw new RemoraError(
        'REMORA_E_CONTROL_SERVICE_NOT_ON_NODE',
        `Consul lists no instance of ${service} with Meta ${NODE_META_KEY}=${node}; register it on that node with the agent, then retry`,
        { service, node, instances: entries.length },
      );
    return mine;
  }

  /**
   * DNS SANs are granted to an ingress gateway only (Consul lists the service with Kind
   * ingress-gateway on the node), and only the names its ingress-gateway entry derives (read
   * here from Consul, not taken from the request): docs/gateways.md, "What control checks".
   */
  async function checkDnsSans(
    service: string,
    node: string,
    dnsNames: readonly string[],
    mine: readonly CatalogServiceEntry[],
  ): Promise<void> {
    const refuse = (why: string, details: Record<string, unknown> = {}): never => {
      throw new RemoraError(
        'REMORA_E_CONTROL_CSR_DNS_SAN_NOT_ALLOWED',
        `CSR for ${service} asks for DNS names (${dnsNames.slice(0, 4).join(', ')}${dnsNames.length > 4 ? ', …' : ''}), but ${why}`,
        { service, node, dnsNames: dnsNames.slice(0, 8), ...details },
      );
    };
    if (!mine.some((e) => e.ServiceKind === INGRESS_GATEWAY_KIND))
      refuse(
        `${service} on ${node} is not an ingress gateway; only an ingress gateway's certificate carries DNS names — make the CSR with only the SPIFFE ID`,
      );
    if (!consul.config) refuse('control cannot read config entries from Consul to check them');
    let entries;
    try {
      entries = (await consul.config!.list(INGRESS_GATEWAY_KIND)).entries;
    } catch (err) {
      throw consulUnavailable(err, `read ingress-gateway ${service} from Consul`);
    }
    const entry = entries.find((e) => e.Name === service);
    if (entry === undefined)
      refuse(`Consul holds no ingress-gateway entry named ${service}; write one with TLS enabled`);
    const allowed = ingressDnsSans(entry as unknown as Record<string, unknown>, {
      datacenter: config.datacenter,
      domains: config.consulDnsDomains ?? ['consul'],
    });
    if (allowed.length === 0)
      refuse(
        `the ingress-gateway entry ${service} enables no TLS (TLS.Enabled, gateway or listener)`,
      );
    const outside = dnsNames.filter((n) => !allowed.includes(n));
    if (outside.length > 0)
      refuse(
        `${outside.slice(0, 4).join(', ')} ${outside.length === 1 ? 'is' : 'are'} not derived from the ingress-gateway entry ${service} (it allows ${allowed.slice(0, 6).join(', ')}${allowed.length > 6 ? ', …' : ''}); add the host to a service's Hosts, or check that control and the agent agree on consul.dnsDomains`,
        { outside: outside.slice(0, 8) },
      );
  }

  /**
   * A terminating gateway's leaf for a linked service (docs/gateways.md): the requesting
   * instance is a terminating gateway named `gateway` on `node`, and its `terminating-gateway`
   * entry links `service` by name, or by `*` while the catalog lists the service.
   */
  async function checkGatewayLink(req: SignRequestV1, gateway: string): Promise<void> {
    const refuse = (why: string) =>
      new RemoraError(
        'REMORA_E_CONTROL_GATEWAY_SERVICE_NOT_LINKED',
        `terminating gateway ${gateway} (${req.serviceId} on ${req.node}) may not get a certificate for ${req.service}: ${why}`,
        { gateway, service: req.service, serviceId: req.serviceId, node: req.node },
      );
    if (req.service === gateway)
      throw refuse('a gateway gets its own certificate without `gateway`');
    let entries: CatalogServiceEntry[];
    try {
      entries = await consul.catalog.service(gateway);
    } catch (err) {
      throw consulUnavailable(err, `list instances of ${gateway} in the Consul catalog`);
    }
    const own = entries.find(
      (e) => e.ServiceID === req.serviceId && e.ServiceMeta?.[NODE_META_KEY] === req.node,
    );
    if (own === undefined)
      throw new RemoraError(
        'REMORA_E_CONTROL_SERVICE_NOT_ON_NODE',
        `Consul lists no instance ${req.serviceId} of ${gateway} with Meta ${NODE_META_KEY}=${req.node}; register the gateway on that node with the agent, then retry`,
        { service: gateway, node: req.node, instances: entries.length },
      );
    if (own.ServiceKind !== 'terminating-gateway')
      throw refuse(
        `Consul lists ${req.serviceId} as ${own.ServiceKind ? `a ${own.ServiceKind}` : 'a typical service'}, not a terminating gateway`,
      );
    if (!consul.config) throw refuse('control cannot read Consul config entries');
    let linked: unknown;
    try {
      const list = await consul.config.list('terminating-gateway');
      linked = list.entries.find((e) => e.Name === gateway)?.Services;
    } catch (err) {
      throw consulUnavailable(err, 'read the terminating-gateway config entries');
    }
    const names = (Array.isArray(linked) ? linked : []).map((x: unknown) =>
      typeof x === 'object' && x !== null ? (x as Record<string, unknown>).Name : undefined,
    );
    if (names.includes(req.service)) return;
    if (names.includes('*')) {
      let listed: CatalogServiceEntry[];
      try {
        listed = await consul.catalog.service(req.service);
      } catch (err) {
        throw consulUnavailable(err, `list instances of ${req.service} in the Consul catalog`);
      }
      // Consul's wildcard links the typical services of the catalog
      if (listed.some((e) => !e.ServiceKind)) return;
      throw refuse(`its entry links "*", but the catalog lists no instance of ${req.service}`);
    }
    throw refuse(
      `its terminating-gateway entry ${linked === undefined ? 'does not exist' : `links ${names.filter((n) => typeof n === 'string').join(', ') || 'no service'}`}; add ${req.service} to its Services`,
    );
  }

  function checkCsr(req: SignRequestV1, spiffeId: string) {
    const parsed = parseCsr(req.csr);
    const info = parsed.info;
    // DNS names are checked apart (checkDnsSans): only an ingress gateway's, from its entry
    const sans = [...info.uris, ...info.ipAddresses];
    if (info.otherSanCount > 0 || sans.length !== 1 || info.uris[0] !== spiffeId)
      throw new RemoraError(
        'REMORA_E_CONTROL_CSR_SAN_MISMATCH',
        `CSR for ${req.service} must hold exactly one URI SAN, ${spiffeId}, and no IP address; it holds ${sans.length + info.otherSanCount} (${sans.slice(0, 4).join(', ') || 'none'})`,
        { service: req.service, expected: spiffeId, sans: sans.slice(0, 8) },
      );
    if (info.keyType !== 'rsa' || info.keyBits < MIN_RSA_BITS || info.keyBits > MAX_RSA_BITS)
      throw new RemoraError(
        'REMORA_E_CONTROL_CSR_WEAK_KEY',
        `CSR key is ${info.keyType === 'rsa' ? `RSA ${info.keyBits}` : 'not RSA'}; use an RSA key of ${MIN_RSA_BITS} to ${MAX_RSA_BITS} bits`,
        { keyType: info.keyType, keyBits: info.keyBits },
      );
    return parsed;
  }

  async function handleSign(data: Uint8Array): Promise<SignResponseV1> {
    const req = decodeSignRequestV1(data);
    const st = loaded();
    const now = clock.now();
    const claims = verifyNodeToken(st.secret, req.token, req.node, now);
    if (!serviceMatchesGlobs(req.service, claims.services))
      throw new RemoraError(
        'REMORA_E_CONTROL_SERVICE_NOT_ALLOWED',
        `node token of ${req.node} allows ${claims.services.join(', ')}, not ${req.service}; create a token that covers it: remora token create ${req.node} ${[...claims.services, req.service].join(' ')}`,
        { node: req.node, service: req.service, globs: claims.services },
      );
    const spiffeId = formatSpiffeId({
      trustDomain: st.ca.trustDomain,
      datacenter: config.datacenter,
      service: req.service,
    });
    const csr = checkCsr(req, spiffeId);
    const dnsNames = csr.info.dnsNames.map((n) => n.toLowerCase());
    if (req.gateway === undefined) {
      const mine = await checkCatalog(req.service, req.node);
      if (dnsNames.length > 0) await checkDnsSans(req.service, req.node, dnsNames, mine);
    } else {
      if (dnsNames.length > 0)
        throw new RemoraError(
          'REMORA_E_CONTROL_CSR_DNS_SAN_NOT_ALLOWED',
          `CSR for ${req.service} through the terminating gateway ${req.gateway} asks for DNS names (${dnsNames.slice(0, 4).join(', ')}); a linked service's certificate carries only its SPIFFE ID — make the CSR without DNS names`,
          { service: req.service, gateway: req.gateway, dnsNames: dnsNames.slice(0, 8) },
        );
      // the gateway's token must cover the gateway too (Consul: service:write on both)
      if (!serviceMatchesGlobs(req.gateway, claims.services))
        throw new RemoraError(
          'REMORA_E_CONTROL_SERVICE_NOT_ALLOWED',
          `node token of ${req.node} allows ${claims.services.join(', ')}, not the gateway ${req.gateway}; create a token that covers it: remora token create ${req.node} ${[...claims.services, req.gateway].join(' ')}`,
          { node: req.node, service: req.gateway, globs: claims.services },
        );
      await checkGatewayLink(req, req.gateway);
    }
    const root = activeRoot(st.ca);
    const leaf = issueLeaf({
      ca: root,
      csr,
      spiffeId,
      ...(dnsNames.length > 0 ? { dnsNames } : {}),
      ttlMs: leafTtlMs,
      now: clock.now(),
    });
    metrics.issued.inc({ service: req.service });
    logger.info(
      {
        node: req.node,
        service: req.service,
        serviceId: req.serviceId,
        ...(req.gateway === undefined ? {} : { gateway: req.gateway }),
        serial: leaf.serial,
        rootId: root.id,
        notAfter: leaf.notAfter.toISOString(),
        ...(dnsNames.length > 0 ? { dnsNames: dnsNames.length } : {}),
      },
      'issued workload certificate',
    );
    return {
      v: 1,
      cert: leaf.certPem,
      chain: [root.certPem],
      serial: leaf.serial,
      notBefore: leaf.notBefore.toISOString(),
      notAfter: leaf.notAfter.toISOString(),
      spiffeId,
    };
  }

  function handleRoots(data: Uint8Array): RootsV1 {
    decodeEmptyRequestV1(data, 'ca.roots request');
    return rootsMessage(loaded().ca, clock.now());
  }

  async function handleRotate(data: Uint8Array): Promise<RootsV1> {
    const req = decodeCaRotateRequestV1(data);
    requireOperator(req.operatorToken, 'ca.rotate');
    const st = loaded();
    const next = await updateDoc(consul.kv, keys.ca, decodeCaState, (current) => {
      if (!current)
        throw new RemoraError(
          'REMORA_E_CONTROL_STATE_CORRUPT',
          `Consul KV key ${keys.ca} disappeared; restart control to recreate it`,
          { key: keys.ca },
        );
      return rotateCaState(current, {
        now: clock.now(),
        rootTtlMs,
        leafTtlMs,
        marginMs: 2 * refreshIntervalMs,
      });
    });
    st.ca = next;
    metrics.caRotations.inc();
    const roots = rootsMessage(next, clock.now());
    logger.info(
      { rootId: next.activeRootId, trusted: roots.roots.map((r) => r.id) },
      'rotated the CA; publishing roots.changed',
    );
    nc.publish(s.caRootsChanged, encodeMessage(roots));
    return roots;
  }

  async function handleIntentionsGet(data: Uint8Array): Promise<IntentionsSnapshotV1> {
    decodeEmptyRequestV1(data, 'intentions.get request');
    let snap: IntentionsSnapshot;
    try {
      snap = await reloadIntentions();
    } catch (err) {
      // Consul down: serve the last known snapshot rather than nothing
      logError(logger, err, 'serving cached intentions', 'warn');
      snap = loaded().intentions;
    }
    return { v: 1, ...snap };
  }

  function publishIntentions(doc: IntentionsSnapshot): void {
    const st = loaded();
    if (doc.revision >= st.intentions.revision) st.intentions = doc;
    nc.publish(s.intentionsChanged, encodeMessage({ v: 1, ...doc }));
  }

  async function handleUpsert(data: Uint8Array) {
    const req = decodeIntentionUpsertRequestV1(data);
    requireOperator(req.operatorToken, 'intentions.upsert');
    await refuseJwtOnTcp(req.intention);
    const doc = await updateDoc(consul.kv, keys.intentions, decodeIntentionsDoc, (current) =>
      upsertInDoc(
        current ?? emptyIntentionsDoc(config.defaultPolicy, config.auditMode),
        req.intention,
        clock.now(),
      ),
    );
    publishIntentions(doc);
    const saved = doc.intentions.find(
      (i) => i.source === req.intention.source && i.destination === req.intention.destination,
    )!;
    logger.info(
      {
        source: saved.source,
        destination: saved.destination,
        action: saved.action ?? 'l7',
        revision: doc.revision,
      },
      'intention saved',
    );
    const warnings = await intentionWarnings(saved);
    return {
      v: 1,
      revision: doc.revision,
      intention: saved,
      ...(warnings.length ? { warnings } : {}),
    };
  }

  /**
   * An intention requiring a JWT cannot apply to a destination that serves tcp (no requests, no
   * tokens): refused before it is saved, when Consul says so in time. A destination not yet
   * registered, or a slow Consul, lets it through (its proxies deny such connections).
   */
  async function refuseJwtOnTcp(i: Intention): Promise<void> {
    if (intentionJwtProviders(i).length === 0 || i.destination === '*') return;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => {
      timer = setTimeout(() => resolve('late'), INTENTION_WARNING_LOOKUP_MS);
    });
    let served: Awaited<ReturnType<typeof servedProtocol>> | 'late' = null;
    try {
      served = await Promise.race([servedProtocol(consul, i.destination), late]);
    } catch (err) {
      logError(logger, err, 'cannot read the protocol of an intention destination', 'warn');
    } finally {
      clearTimeout(timer);
    }
    if (served === 'late' || served?.protocol !== 'tcp') return;
    throw new RemoraError(
      'REMORA_E_INTENTIONS_INVALID',
      `intention ${i.source} → ${i.destination} requires a JWT, but ${i.destination} serves tcp (${served.source}), where requests and their tokens cannot be checked. Set its protocol to http, http2 or grpc (Protocol = "http" in its service-defaults with consul config write, or proxy.config.protocol in its definition), or drop "jwt"`,
      { source: i.source, destination: i.destination, field: 'jwt' },
    );
  }

  /** What a saved intention will do that its author likely did not mean (never fails the save). */
  async function intentionWarnings(i: Intention): Promise<string[]> {
    if (!i.permissions || i.destination === '*') return [];
    // the intention is saved already: a slow Consul must not hold the reply until the caller
    // gives up and believes it failed
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => {
      timer = setTimeout(() => resolve('late'), INTENTION_WARNING_LOOKUP_MS);
    });
    try {
      const served = await Promise.race([servedProtocol(consul, i.destination), late]);
      if (served === 'late' || served?.protocol !== 'tcp') return [];
    } catch (err) {
      logError(logger, err, 'cannot read the protocol of an intention destination', 'warn');
      return [];
    } finally {
      clearTimeout(timer);
    }
    return [
      `${i.destination} serves tcp, where requests cannot be checked: its proxies deny the connections this intention covers. Set its protocol to http (Protocol = "http" in its service-defaults with consul config write, or proxy.config.protocol in its definition), or use an L4 intention (--allow/--deny)`,
    ];
  }

  async function handleDelete(data: Uint8Array) {
    const req = decodeIntentionDeleteRequestV1(data);
    requireOperator(req.operatorToken, 'intentions.delete');
    const doc = await updateDoc(consul.kv, keys.intentions, decodeIntentionsDoc, (current) =>
      deleteFromDoc(current ?? emptyIntentionsDoc(config.defaultPolicy, config.auditMode), req),
    );
    publishIntentions(doc);
    logger.info(
      { source: req.source, destination: req.destination, revision: doc.revision },
      'intention deleted',
    );
    return { v: 1, revision: doc.revision };
  }

  async function handlePolicy(data: Uint8Array): Promise<IntentionsSnapshotV1> {
    const req = decodeIntentionsPolicyRequestV1(data);
    requireOperator(req.operatorToken, 'intentions.policy');
    const doc = await updateDoc(consul.kv, keys.intentions, decodeIntentionsDoc, (current) => {
      const base = current ?? emptyIntentionsDoc(config.defaultPolicy, config.auditMode);
      return {
        ...base,
        revision: base.revision + 1,
        defaultPolicy: req.defaultPolicy ?? base.defaultPolicy,
        auditMode: req.auditMode ?? base.auditMode,
      };
    });
    publishIntentions(doc);
    logger.info(
      { defaultPolicy: doc.defaultPolicy, auditMode: doc.auditMode, revision: doc.revision },
      'intentions policy changed',
    );
    return { v: 1, ...doc };
  }

  function handleTokenCreate(data: Uint8Array): TokenCreateResponseV1 {
    const req = decodeTokenCreateRequestV1(data);
    requireOperator(req.operatorToken, 'tokens.create');
    const now = clock.now();
    const expiresAt = req.ttlSeconds ? now + req.ttlSeconds * 1000 : null;
    const token = createNodeToken(loaded().secret, {
      node: req.node,
      services: req.services,
      expiresAt,
      issuedAt: now,
    });
    logger.info({ node: req.node, services: req.services, expiresAt }, 'node token created');
    return {
      v: 1,
      token,
      node: req.node,
      services: req.services,
      expiresAt: expiresAt === null ? null : new Date(expiresAt).toISOString(),
    };
  }

  // ------------------------------------------------------------ serving

  /** Sends a reply; a connection closing under us is logged, never thrown into the handler. */
  function reply(
    msg: { respond(data: Uint8Array): boolean; subject: string },
    data: Uint8Array,
  ): void {
    try {
      msg.respond(data);
    } catch (err) {
      logError(logger, err, `cannot reply on ${msg.subject}`, 'warn');
    }
  }

  function serve(name: string, subject: string, handler: Handler): void {
    const sub = nc.subscribe(subject, {
      queue: CONTROL_QUEUE_GROUP,
      callback: (err, msg) => {
        if (err) {
          logError(logger, err, `subscription ${subject} failed`, 'warn');
          return;
        }
        const started = process.hrtime.bigint();
        const span = options.tracing?.tracer.startSpan(
          `remora.control ${name}`,
          {
            kind: SpanKind.SERVER,
            attributes: { 'messaging.system': 'nats', 'messaging.destination.name': subject },
          },
          options.tracing.extract(traceContextFromHeaders(msg.headers)),
        );
        const done = (async () => {
          try {
            const body = await handler(msg.data, msg.headers);
            reply(msg, encodeMessage(body));
            metrics.requests.inc({ subject: name, result: 'ok' });
          } catch (e) {
            const re = toRemoraError(e);
            metrics.requests.inc({ subject: name, result: 'error' });
            metrics.refusals.inc({ subject: name, code: re.code });
            span?.setStatus({ code: SpanStatusCode.ERROR, message: re.code });
            span?.setAttribute('remora.error.code', re.code);
            logError(
              logger,
              re,
              `${name} refused`,
              re.code === 'REMORA_E_INTERNAL' ? 'error' : 'warn',
            );
            reply(msg, encodeErrorReply(re));
          } finally {
            metrics.duration.observe(
              { subject: name },
              Number(process.hrtime.bigint() - started) / 1e9,
            );
            span?.end();
          }
        })();
        inflight.add(done);
        void done.then(
          () => inflight.delete(done),
          (err: unknown) => {
            inflight.delete(done);
            logError(logger, err, `${name} handler failed`);
          },
        );
      },
    });
    subs.push(sub);
  }

  function scheduleRefresh(): void {
    if (stopped) return;
    refreshTimer = clock.setTimeout(() => {
      void (async () => {
        try {
          await reloadCa();
          await reloadIntentions();
        } catch (err) {
          logError(
            logger,
            err,
            'periodic reload from Consul failed; serving the last known state',
            'warn',
          );
        }
        scheduleRefresh();
      })();
    }, refreshIntervalMs);
  }

  return {
    metrics,
    get metricsPort() {
      return metricsServer?.port;
    },
    roots: () => rootsMessage(loaded().ca, clock.now()),
    async start() {
      for (let attempt = 0; !state; attempt += 1) {
        if (stopped) return;
        try {
          state = await loadAll();
        } catch (err) {
          const delay = backoffDelay(attempt, { baseMs: 200, maxMs: 10_000, random });
          logError(
            logger,
            err,
            `cannot load control state from Consul; retrying in ${delay} ms`,
            'warn',
          );
          await new Promise<void>((resolve) => clock.setTimeout(resolve, delay));
        }
      }
      if (stopped) return;
      serve('ca.sign', s.caSign, handleSign);
      serve('ca.roots', s.caRoots, handleRoots);
      serve('ca.rotate', s.caRotate, handleRotate);
      serve('intentions.get', s.intentionsGet, handleIntentionsGet);
      serve('intentions.upsert', s.intentionsUpsert, handleUpsert);
      serve('intentions.delete', s.intentionsDelete, handleDelete);
      serve('intentions.policy', s.intentionsPolicy, handlePolicy);
      serve('tokens.create', s.tokensCreate, handleTokenCreate);
      // every replica reloads the CA when any replica rotates it (not a queue subscription)
      subs.push(
        nc.subscribe(s.caRootsChanged, {
          callback: () => {
            reloadCa().catch((err: unknown) =>
              logError(logger, err, 'reloading the CA after roots.changed failed', 'warn'),
            );
          },
        }),
      );
      // and keeps its intentions cache current for when Consul is unreachable
      subs.push(
        subscribeIntentionsChanged(
          nc,
          config.datacenter,
          (snap) => {
            const { v: _v, ...doc } = snap;
            if (state && doc.revision > state.intentions.revision) state.intentions = doc;
          },
          { logger },
        ),
      );
      await nc.flush();
      if (config.metricsPort !== undefined && config.metricsPort > 0)
        metricsServer = await startMetricsServer(metrics.registry, config.metricsPort);
      scheduleRefresh();
      logger.info(
        {
          datacenter: config.datacenter,
          queue: CONTROL_QUEUE_GROUP,
          trustDomain: state.ca.trustDomain,
          metricsPort: metricsServer?.port,
        },
        'control plane serving',
      );
    },
    async stop() {
      stopped = true;
      if (refreshTimer) clock.clearTimeout(refreshTimer);
      await Promise.allSettled(subs.map((sub) => sub.drain()));
      subs.length = 0;
      await Promise.allSettled([...inflight]);
      await metricsServer?.close();
      metricsServer = undefined;
    },
  };
}
