// Control's authorization of a terminating gateway's leaves for the services its entry links
// (docs/gateways.md, "Terminating gateways").
import t from 'tap';
import { createControl } from '../../control/index.ts';
import { createFakeConsul } from './fake-consul.ts';
import { startNatsServer, type NatsServerHandle } from '../helpers/nats.ts';
import {
  connectNats,
  createToken,
  requestRoots,
  requestSign,
  type NatsConnection,
} from '../../lib/nats/index.ts';
import { createSilentLogger } from '../../lib/log/index.ts';
import { createCsr, generateKeyPair, inspectCert } from '../../lib/pki/index.ts';
import { formatSpiffeId } from '../../lib/identity/index.ts';
import { hasCode } from '../../lib/errors/index.ts';
import { createClock } from '../../lib/util/index.ts';

const OP = 'operator-secret';
const logger = createSilentLogger();

let nats: NatsServerHandle;
let nc: NatsConnection;
t.before(async () => {
  nats = await startNatsServer();
  nc = await connectNats({ servers: nats.url, name: 'test', logger });
});
t.teardown(async () => {
  await nc.close();
  await nats.stop();
});

async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
    return undefined;
  } catch (err) {
    return hasCode(err) ? err.code : String(err);
  }
}

t.test(
  'a terminating gateway gets leaves for the services its entry links, and for nothing else',
  async (t) => {
    const consul = createFakeConsul();
    const c = await connectNats({ servers: nats.url, name: 'control', logger });
    const control = createControl({
      config: {
        datacenter: 'dc1',
        kvPrefix: 'remora/',
        leafTtlHours: 72,
        rootTtlDays: 3650,
        operatorToken: OP,
        defaultPolicy: 'deny',
        auditMode: false,
      },
      nats: c,
      consul,
      clock: createClock(),
      logger,
    });
    await control.start();
    t.teardown(async () => {
      await control.stop();
      await c.close();
    });
    consul.services.push(
      {
        Node: 'node-1',
        ServiceID: 'tgw-1',
        ServiceName: 'tgw',
        ServiceKind: 'terminating-gateway',
        ServiceMeta: { 'remora-node': 'node-1' },
      },
      // a service of the catalog registered by hand (no sidecar, no remora-node)
      { Node: 'db-host', ServiceID: 'legacy-1', ServiceName: 'legacy', ServiceMeta: {} },
      { Node: 'db-host', ServiceID: 'billing-1', ServiceName: 'billing', ServiceMeta: {} },
      // a typical service named tgw2 on node-1: not a gateway
      {
        Node: 'node-1',
        ServiceID: 'tgw2-1',
        ServiceName: 'tgw2',
        ServiceMeta: { 'remora-node': 'node-1' },
      },
    );
    consul.configEntries.set('terminating-gateway', [
      { Kind: 'terminating-gateway', Name: 'tgw', Services: [{ Name: 'legacy' }] },
      { Kind: 'terminating-gateway', Name: 'tgw2', Services: [{ Name: 'legacy' }] },
    ]);
    const { token } = await createToken(nc, 'dc1', OP, {
      node: 'node-1',
      services: ['tgw*', 'legacy', 'billing'],
    });
    const roots = await requestRoots(nc, 'dc1');
    const id = (svc: string) =>
      formatSpiffeId({ trustDomain: roots.trustDomain, datacenter: 'dc1', service: svc });
    const keys = generateKeyPair();
    const ask = (service: string, extra: Record<string, string> = {}) =>
      requestSign(nc, 'dc1', {
        node: 'node-1',
        token,
        service,
        serviceId: 'tgw-1',
        gateway: 'tgw',
        csr: createCsr({ ...keys, spiffeId: id(service) }),
        ...extra,
      });

    const leaf = await ask('legacy');
    t.equal(leaf.spiffeId, id('legacy'), 'the leaf carries the linked service identity');
    t.same(inspectCert(leaf.cert).uris, [id('legacy')]);

    t.equal(
      await codeOf(
        requestSign(nc, 'dc1', {
          node: 'node-1',
          token,
          service: 'legacy',
          serviceId: 'tgw-1',
          gateway: 'tgw',
          csr: createCsr({ ...keys, spiffeId: id('legacy'), dnsNames: ['legacy.example.com'] }),
        }),
      ),
      'REMORA_E_CONTROL_CSR_DNS_SAN_NOT_ALLOWED',
      "a linked service's leaf carries no DNS name",
    );
    t.equal(
      await codeOf(ask('billing')),
      'REMORA_E_CONTROL_GATEWAY_SERVICE_NOT_LINKED',
      'a service the entry does not link is refused, even one the token covers',
    );
    t.equal(
      await codeOf(ask('legacy', { serviceId: 'tgw2-1', gateway: 'tgw2' })),
      'REMORA_E_CONTROL_GATEWAY_SERVICE_NOT_LINKED',
      'an instance that is not a terminating gateway is refused',
    );
    t.equal(
      await codeOf(ask('legacy', { serviceId: 'tgw-9' })),
      'REMORA_E_CONTROL_SERVICE_NOT_ON_NODE',
      'a gateway instance Consul does not list on the node is refused',
    );
    t.equal(
      await codeOf(ask('legacy', { node: 'node-2' })),
      'REMORA_E_CONTROL_TOKEN_INVALID',
      "another node's request with this token is refused",
    );
    const narrow = await createToken(nc, 'dc1', OP, { node: 'node-1', services: ['tgw'] });
    t.equal(
      await codeOf(ask('legacy', { token: narrow.token })),
      'REMORA_E_CONTROL_SERVICE_NOT_ALLOWED',
      'the node token must cover the linked service too',
    );
    const other = await createToken(nc, 'dc1', OP, { node: 'node-1', services: ['legacy'] });
    t.equal(
      await codeOf(ask('legacy', { token: other.token })),
      'REMORA_E_CONTROL_SERVICE_NOT_ALLOWED',
      'and the gateway',
    );

    // the wildcard links what the catalog lists, live
    consul.configEntries.set('terminating-gateway', [
      { Kind: 'terminating-gateway', Name: 'tgw', Services: [{ Name: '*' }] },
    ]);
    t.equal((await ask('billing')).spiffeId, id('billing'), '"*" links a catalog service');
    const ghost = await createToken(nc, 'dc1', OP, { node: 'node-1', services: ['*'] });
    t.equal(
      await codeOf(ask('ghost', { token: ghost.token })),
      'REMORA_E_CONTROL_GATEWAY_SERVICE_NOT_LINKED',
      '"*" does not link a service the catalog does not list',
    );
    consul.configEntries.set('terminating-gateway', []);
    t.equal(
      await codeOf(ask('legacy')),
      'REMORA_E_CONTROL_GATEWAY_SERVICE_NOT_LINKED',
      'without an entry nothing is linked',
    );
  },
);
