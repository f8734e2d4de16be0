// An agent running a terminating gateway, with fakes for Consul, control and the proxy: the
// leaves it asks control for (one per linked service, for the gateway, keys written 0600), what
// it does when control refuses one, and the snapshot built from its entry (each linked service
// with its certificate, the SNI callers send, its own healthy instances), following entry changes.
import t from 'tap';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { ConnectEntry, ConsulPort } from '../../agent/ports.ts';
import type { ProxySnapshot } from '../../lib/proxy-api/index.ts';
import { RemoraError } from '../../lib/errors/index.ts';
import { inspectCert } from '../../lib/pki/index.ts';
import { waitFor } from '../../lib/util/index.ts';
import { createFakeConfigEntries, startHost } from './fakes.ts';

function serviceEntry(service: string, address: string, port: number): ConnectEntry {
  return {
    Node: { Node: 'db-host', Address: address },
    Service: { ID: `${service}-1`, Service: service, Address: address, Port: port },
  };
}

t.test(
  'a terminating gateway gets a leaf per linked service and serves those it holds',
  async (t) => {
    const external: Record<string, ConnectEntry[]> = {
      legacy: [serviceEntry('legacy', '10.1.0.7', 5432)],
      ledger: [serviceEntry('ledger', '10.1.0.8', 7000)],
    };
    const entries = createFakeConfigEntries({
      'service-defaults': [{ Kind: 'service-defaults', Name: 'legacy', Protocol: 'http' }],
      'terminating-gateway': [
        {
          Kind: 'terminating-gateway',
          Name: 'tgw',
          Services: [{ Name: 'legacy' }, { Name: 'ledger' }],
        } as never,
      ],
    });
    const watched: string[] = [];
    const consul: ConsulPort = {
      async registerService() {},
      async deregisterService() {},
      async updateTtl() {},
      watchConnect(_service, h) {
        queueMicrotask(() => h.onChange([]));
        return { stop: () => undefined };
      },
      watchService(service, h) {
        watched.push(service);
        queueMicrotask(() => h.onChange(external[service] ?? []));
        return { stop: () => undefined };
      },
      watchServices(h) {
        queueMicrotask(() => h.onChange(['legacy', 'ledger', 'tgw']));
        return { stop: () => undefined };
      },
      watchConfigEntries: entries.watchConfigEntries,
    };
    const asked: { service: string; serviceId: string; gateway?: string }[] = [];
    let last: ProxySnapshot | null = null;
    const { agent, dataDir } = await startHost(
      t,
      consul,
      [],
      { 'tgw.json': { service: { kind: 'terminating-gateway', name: 'tgw', port: 8443 } } },
      { proxyBindAddress: '127.0.0.1' },
      (s) => (last = s),
      (control) => ({
        ...control,
        async sign(req) {
          asked.push({
            service: req.service,
            serviceId: req.serviceId,
            ...(req.gateway ? { gateway: req.gateway } : {}),
          });
          // control links what the entry names; this one it refuses
          if (req.service === 'ledger')
            throw new RemoraError(
              'REMORA_E_CONTROL_GATEWAY_SERVICE_NOT_LINKED',
              'terminating gateway tgw may not get a certificate for ledger',
            );
          return control.sign(req);
        },
      }),
    );
    const served = () => last?.terminating?.services.map((s) => s.service) ?? [];
    await waitFor('legacy served', () => served().includes('legacy'));
    const snap = last!;
    t.match(snap.instance.spiffeId, /\/svc\/tgw$/, 'the gateway has its own identity too');
    t.same(snap.inbound.bindPort, 8443, 'mesh callers reach it on its port');
    t.same(served(), ['legacy'], 'a service whose leaf control refused is not served');
    const legacy = snap.terminating!.services[0]!;
    t.equal(legacy.protocol, 'http', 'its protocol from its service-defaults');
    t.equal(legacy.sni, `legacy.default.dc1.internal.${snap.instance.trustDomain}`, 'Consul’s SNI');
    t.same(inspectCert(legacy.certPem).uris, [snap.instance.spiffeId.replace(/tgw$/, 'legacy')]);
    t.same(
      legacy.endpoints.map((e) => `${e.address}:${e.port}`),
      ['10.1.0.7:5432'],
      'its own healthy instances (no sidecar)',
    );
    t.equal(legacy.tls, undefined, 'plain TCP without TLS fields');
    t.same(
      [
        ...new Set(
          asked
            .filter((a) => a.gateway !== undefined)
            .map((a) => `${a.service} ${a.serviceId} ${a.gateway}`),
        ),
      ].sort(),
      ['ledger tgw tgw', 'legacy tgw tgw'],
      'the leaves are asked for with the gateway instance and name',
    );
    t.ok(watched.includes('legacy') && watched.includes('ledger'), 'their instances are followed');
    const key = await stat(join(dataDir, 'instances', 'tgw', 'linked', 'legacy', 'key.pem'));
    t.equal(key.mode & 0o777, 0o600, 'the private key stays on the host, 0600');

    const status = agent.status().instances.find((i) => i.id === 'tgw')!;
    t.equal(status.kind, 'terminating-gateway');
    t.match(status.linked, [
      { name: 'ledger', certificate: false, error: { code: 'REMORA_E_AGENT_SIGN_FAILED' } },
      { name: 'legacy', protocol: 'http', origination: 'plain', endpoints: 1, certificate: true },
    ]);
    t.match(
      status.linked?.[0]?.error?.message,
      /may not get a certificate for ledger/,
      'with control’s reason',
    );

    // a changed entry applies live: legacy unlinked, TLS asked for a new one
    entries.set('terminating-gateway', [
      {
        Kind: 'terminating-gateway',
        Name: 'tgw',
        Services: [{ Name: 'ledger', CAFile: '/nonexistent/ca.pem' }],
      } as never,
    ]);
    await waitFor('legacy unlinked', () => !served().includes('legacy'));
    t.same(served(), [], 'nothing served: ledger has no leaf and its CA file cannot be read');
    const problems = agent.status().problems.map((p) => p.code);
    t.ok(
      problems.includes('REMORA_E_AGENT_TERMINATING_TLS_FILE'),
      'the unreadable file is a problem',
    );
  },
);
