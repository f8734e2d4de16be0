// Workload identities: one RSA key per instance, generated here and written 0600, never sent
// anywhere; a CSR goes to control (`ca.sign`) with the node token. Renewal happens at a random
// point between 60 % and 90 % of the lifetime and right after a root rotation; failures retry
// with backoff and the current certificate stays in use until it expires.
import { X509Certificate, createPrivateKey, createPublicKey } from 'node:crypto';
import { createCsr, generateKeyPair, inspectCert, type KeyPair } from '../lib/pki/index.ts';
import { formatSpiffeId } from '../lib/identity/index.ts';
import { RemoraError, toRemoraError } from '../lib/errors/index.ts';
import { logError, type Logger } from '../lib/log/index.ts';
import type { Clock } from '../lib/util/index.ts';
import { readFileOrNull, writeFileAtomic, type DataPaths } from './files.ts';
import { renewalTime, signRetryDelay } from './renewal.ts';
import type { ControlPort } from './ports.ts';

export interface WorkloadCert {
  keyPem: string;
  certPem: string;
  spiffeId: string;
  /** DNS SANs (an ingress gateway's with TLS listeners; docs/gateways.md). */
  dnsNames: string[];
  notBefore: number;
  notAfter: number;
}

export interface IdentityStatus {
  spiffeId: string | null;
  notAfter: string | null;
  renewAt: string | null;
  expired: boolean;
  lastError: { code: string; message: string; at: string } | null;
}

export interface IdentityManagerOptions {
  paths: DataPaths;
  datacenter: string;
  /** Sends the CSR to control; rejects while NATS or control are down. */
  sign: ControlPort['sign'];
  /** The trust domain once the roots are known; null before. */
  trustDomain(): string | null;
  clock: Clock;
  random: () => number;
  logger: Logger;
  /** Called whenever an instance's certificate changes. */
  onChange(instanceId: string): void;
  /**
   * The DNS names an instance's certificate must carry besides its SPIFFE ID (an ingress
   * gateway's), null while not known yet (the certificate at hand keeps its names). Absent: none.
   */
  dnsNames?(instanceId: string): string[] | null;
  generateKey?: () => KeyPair;
  /**
   * False while Consul does not list the instance yet. Control signs only for an instance the
   * catalog lists on this node, so an instance without a certificate asks only once this is true
   * (the agent then calls `requestIfMissing`); its key is generated meanwhile. Renewals do not
   * wait. Absent: always true.
   */
  registered?(instanceId: string): boolean;
}

interface Managed {
  id: string;
  service: string;
  /** A terminating gateway's leaf of a linked service: the gateway instance it is for. */
  gateway: { name: string; instanceId: string } | null;
  key: KeyPair | null;
  cert: WorkloadCert | null;
  renewAt: number | null;
  timer: NodeJS.Timeout | null;
  attempt: number;
  inFlight: boolean;
  again: boolean;
  /** `requestIfMissing` came while a request was in flight: ask again if it brought no certificate. */
  againIfMissing: boolean;
  removed: boolean;
  lastError: IdentityStatus['lastError'];
}

export interface IdentityManager {
  /**
   * Starts managing an instance: loads its key and certificate from disk or obtains them. With
   * `gateway`, a terminating gateway's leaf of `service` (a service it links): asked for with
   * the gateway instance's ID and name, under an `id` of its own.
   */
  add(instance: {
    id: string;
    service: string;
    gateway?: { name: string; instanceId: string };
  }): Promise<void>;
  remove(id: string): void;
  get(id: string): WorkloadCert | null;
  status(id: string): IdentityStatus | null;
  /** Renews every certificate now (after a root rotation). */
  renewAll(reason: string): void;
  /** Asks now for an instance that has no certificate yet (e.g. right after registration). */
  requestIfMissing(id: string): void;
  /** The trust bundle became known: request what was waiting for it, replace certificates of another trust domain. */
  trustBundleKnown(): void;
  /** The DNS names of an instance may have changed: a certificate without exactly them is replaced now. */
  namesChanged(id: string): void;
  stop(): void;
}

function publicKeyOf(keyPem: string): KeyPair {
  // the public key is derived so a key file holds only the private key
  return { keyPem, publicKeyPem: '' };
}

export function createIdentityManager(options: IdentityManagerOptions): IdentityManager {
  const { paths, clock, logger } = options;
  const managed = new Map<string, Managed>();
  const generateKey = options.generateKey ?? generateKeyPair;
  let stopped = false;

  function schedule(m: Managed, at: number): void {
    if (m.timer) clock.clearTimeout(m.timer);
    m.renewAt = at;
    // timers cap at ~24.8 days; re-evaluate at least daily
    const delay = Math.min(Math.max(0, at - clock.now()), 86_400_000);
    m.timer = clock.setTimeout(() => {
      m.timer = null;
      if (clock.now() >= at) void request(m, m.cert ? 'renewal due' : 'retry');
      else schedule(m, at);
    }, delay);
  }

  function expectedSpiffeId(m: Managed): string | null {
    const td = options.trustDomain();
    return td
      ? formatSpiffeId({ trustDomain: td, datacenter: options.datacenter, service: m.service })
      : null;
  }

  async function loadKey(m: Managed): Promise<KeyPair> {
    if (m.key?.publicKeyPem) return m.key;
    const existing = await readFileOrNull(paths.key(m.id));
    if (existing) {
      try {
        const pub = createPublicKey(createPrivateKey(existing)).export({
          type: 'spki',
          format: 'pem',
        });
        m.key = { keyPem: existing, publicKeyPem: pub.toString() };
        return m.key;
      } catch {
        logger.warn(
          { instance: m.id },
          `key file ${paths.key(m.id)} is unreadable; generating a new key`,
        );
      }
    }
    const key = generateKey();
    await writeFileAtomic(paths.key(m.id), key.keyPem, 0o600);
    m.key = key;
    return key;
  }

  async function loadCert(m: Managed): Promise<void> {
    const pem = await readFileOrNull(paths.cert(m.id));
    const keyPem = await readFileOrNull(paths.key(m.id));
    if (!pem || !keyPem) return;
    try {
      const info = inspectCert(pem);
      const spiffeId = info.uris[0] ?? '';
      const now = clock.now();
      if (info.notAfter.getTime() <= now) return;
      if (!new X509Certificate(pem).checkPrivateKey(createPrivateKey(keyPem))) return;
      m.key = publicKeyOf(keyPem);
      m.cert = {
        keyPem,
        certPem: pem,
        spiffeId,
        dnsNames: info.dnsNames,
        notBefore: info.notBefore.getTime(),
        notAfter: info.notAfter.getTime(),
      };
    } catch {
      // a damaged certificate file is simply replaced
    }
  }

  async function request(m: Managed, reason: string): Promise<void> {
    if (stopped || m.removed) return;
    if (m.inFlight) {
      m.again = true;
      return;
    }
    m.inFlight = true;
    try {
      const spiffeId = expectedSpiffeId(m);
      if (!spiffeId) {
        throw new RemoraError(
          'REMORA_E_AGENT_CONTROL_UNAVAILABLE',
          `waiting for the trust bundle from control before requesting a certificate for ${m.id}`,
          { instance: m.id },
        );
      }
      const key = await loadKey(m);
      if (!m.cert && options.registered && !options.registered(m.id)) {
        // control would answer REMORA_E_CONTROL_SERVICE_NOT_ON_NODE; the registration asks again
        logger.debug({ instance: m.id, reason }, `${m.id} waits for its registration in Consul`);
        return;
      }
      // names not known yet (a gateway's entry unread): those of the certificate at hand
      const dnsNames = options.dnsNames?.(m.id) ?? m.cert?.dnsNames ?? [];
      const csr = createCsr({
        keyPem: key.keyPem,
        publicKeyPem: key.publicKeyPem,
        spiffeId,
        ...(dnsNames.length > 0 ? { dnsNames } : {}),
      });
      logger.info(
        { instance: m.id, reason, ...(dnsNames.length > 0 ? { dnsNames } : {}) },
        `requesting a certificate for ${m.id} (${spiffeId})`,
      );
      const signed = await options.sign(
        m.gateway
          ? { service: m.service, serviceId: m.gateway.instanceId, gateway: m.gateway.name, csr }
          : { service: m.service, serviceId: m.id, csr },
      );
      if (m.removed || stopped) return;
      const info = inspectCert(signed.cert);
      if (!info.uris.includes(spiffeId)) {
        throw new RemoraError(
          'REMORA_E_AGENT_SIGN_FAILED',
          `control returned a certificate for ${info.uris.join(',') || 'no SPIFFE ID'} instead of ${spiffeId}`,
          { instance: m.id },
        );
      }
      const certPem = [signed.cert, ...(signed.chain ?? [])].join('\n').replace(/\n+/g, '\n');
      await writeFileAtomic(paths.cert(m.id), certPem, 0o644);
      m.cert = {
        keyPem: key.keyPem,
        certPem,
        spiffeId,
        dnsNames: info.dnsNames,
        notBefore: info.notBefore.getTime(),
        notAfter: info.notAfter.getTime(),
      };
      m.attempt = 0;
      m.lastError = null;
      const at = renewalTime(m.cert.notBefore, m.cert.notAfter, options.random());
      schedule(m, at);
      logger.info(
        {
          instance: m.id,
          serial: info.serial,
          notAfter: info.notAfter.toISOString(),
          renewAt: new Date(at).toISOString(),
        },
        `certificate for ${m.id} issued`,
      );
      options.onChange(m.id);
    } catch (err) {
      const e = hasAgentCode(err)
        ? toRemoraError(err)
        : new RemoraError(
            'REMORA_E_AGENT_SIGN_FAILED',
            `certificate request for ${m.id} failed: ${toRemoraError(err).message}; retrying, the current certificate stays in use until it expires`,
            { instance: m.id, cause: toRemoraError(err).code },
            { cause: err },
          );
      m.lastError = { code: e.code, message: e.message, at: new Date(clock.now()).toISOString() };
      const delay = signRetryDelay(m.attempt, options.random);
      m.attempt += 1;
      logError(logger, e, undefined, 'warn');
      if (m.cert && m.cert.notAfter <= clock.now()) {
        logError(
          logger,
          new RemoraError(
            'REMORA_E_AGENT_CERT_EXPIRED',
            `certificate of ${m.id} expired at ${new Date(m.cert.notAfter).toISOString()}`,
            { instance: m.id },
          ),
        );
      }
      if (!stopped && !m.removed) schedule(m, clock.now() + delay);
    } finally {
      m.inFlight = false;
      const missing = m.againIfMissing && !m.cert;
      m.againIfMissing = false;
      if ((m.again || missing) && !stopped && !m.removed) {
        m.again = false;
        void request(m, missing ? 'instance registered' : 'requested again while in flight');
      }
    }
  }

  /** True unless the instance's names are known and differ from those of its certificate. */
  function namesMatch(m: Managed): boolean {
    const want = options.dnsNames?.(m.id) ?? null;
    if (want === null || m.cert === null) return true;
    const have = m.cert.dnsNames;
    return have.length === want.length && want.every((n) => have.includes(n));
  }

  function hasAgentCode(err: unknown): boolean {
    const code = (err as { code?: unknown } | null)?.code;
    return (
      code === 'REMORA_E_AGENT_CONTROL_UNAVAILABLE' ||
      code === 'REMORA_E_AGENT_SIGN_FAILED' ||
      code === 'REMORA_E_AGENT_DATA_DIR'
    );
  }

  return {
    async add({ id, service, gateway }) {
      if (managed.has(id)) return;
      const m: Managed = {
        id,
        service,
        gateway: gateway ?? null,
        key: null,
        cert: null,
        renewAt: null,
        timer: null,
        attempt: 0,
        inFlight: false,
        again: false,
        againIfMissing: false,
        removed: false,
        lastError: null,
      };
      managed.set(id, m);
      await loadCert(m);
      const td = options.trustDomain();
      if (m.cert && (td === null || m.cert.spiffeId === expectedSpiffeId(m))) {
        // a certificate from before a restart stays in use; renew on the usual schedule
        schedule(m, renewalTime(m.cert.notBefore, m.cert.notAfter, options.random()));
        options.onChange(id);
        if (td === null) return;
        if (!namesMatch(m)) void request(m, 'DNS names changed');
      } else if (!m.inFlight) {
        // (a registration that landed while the files were read may have asked already)
        await request(m, 'new instance');
      }
    },
    remove(id) {
      const m = managed.get(id);
      if (!m) return;
      m.removed = true;
      if (m.timer) clock.clearTimeout(m.timer);
      managed.delete(id);
    },
    get(id) {
      return managed.get(id)?.cert ?? null;
    },
    status(id) {
      const m = managed.get(id);
      if (!m) return null;
      return {
        spiffeId: m.cert?.spiffeId ?? null,
        notAfter: m.cert ? new Date(m.cert.notAfter).toISOString() : null,
        renewAt: m.renewAt === null ? null : new Date(m.renewAt).toISOString(),
        expired: m.cert ? m.cert.notAfter <= clock.now() : false,
        lastError: m.lastError,
      };
    },
    renewAll(reason) {
      for (const m of managed.values()) {
        m.attempt = 0;
        void request(m, reason);
      }
    },
    requestIfMissing(id) {
      const m = managed.get(id);
      if (!m || m.cert) return;
      if (m.inFlight) {
        m.againIfMissing = true;
        return;
      }
      if (m.timer) clock.clearTimeout(m.timer);
      m.timer = null;
      m.attempt = 0;
      void request(m, 'instance registered');
    },
    trustBundleKnown() {
      for (const m of managed.values()) {
        if (!m.inFlight && (!m.cert || m.cert.spiffeId !== expectedSpiffeId(m))) {
          m.attempt = 0;
          void request(m, 'trust bundle known');
        }
      }
    },
    namesChanged(id) {
      const m = managed.get(id);
      if (!m || namesMatch(m)) return;
      m.attempt = 0;
      // a request in flight asked with the old names: `request` asks again after it
      void request(m, 'DNS names changed');
    },
    stop() {
      stopped = true;
      for (const m of managed.values()) if (m.timer) clock.clearTimeout(m.timer);
    },
  };
}
