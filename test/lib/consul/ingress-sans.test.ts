// The DNS names an ingress gateway's certificate covers, derived from its ingress-gateway entry
// as Consul derives them (the agent asks for them, control grants no other).
import t from 'tap';
import { ingressDnsSans, isSanDnsName } from '../../../lib/consul/index.ts';

const o = { datacenter: 'dc1', domains: ['consul'] };

t.test('an entry without TLS gets no DNS name', async (t) => {
  t.same(
    ingressDnsSans(
      { Listeners: [{ Port: 1, Protocol: 'http', Services: [{ Name: 'a', Hosts: ['a.x.io'] }] }] },
      o,
    ),
    [],
  );
  t.same(ingressDnsSans({ TLS: { Enabled: false }, Listeners: [] }, o), []);
});

t.test(
  "TLS on one listener: Consul's ingress wildcards, then the Hosts of every listener (one certificate for the gateway, as in Consul)",
  async (t) => {
    const entry = {
      Listeners: [
        { Port: 8080, Protocol: 'http', Services: [{ Name: 'api', Hosts: ['API.example.com.'] }] },
        {
          Port: 8443,
          Protocol: 'http',
          TLS: { Enabled: true },
          Services: [
            { Name: 'web', Hosts: ['web.example.com', '*.shop.example.com', 'api.example.com'] },
            { Name: 'x', Hosts: ['*', 'x.ingress.*'] },
          ],
        },
      ],
    };
    t.same(ingressDnsSans(entry, { datacenter: 'dc1', domains: ['consul', 'alt.example.'] }), [
      '*.ingress.consul',
      '*.ingress.dc1.consul',
      '*.ingress.alt.example',
      '*.ingress.dc1.alt.example',
      'api.example.com',
      'web.example.com',
      '*.shop.example.com',
    ]);
    t.same(
      ingressDnsSans({ tls: { enabled: true }, listeners: [] }, o),
      ['*.ingress.consul', '*.ingress.dc1.consul'],
      'snake_case, as `consul config write` takes it',
    );
  },
);

t.test('what a certificate can carry as a DNS name', async (t) => {
  for (const ok of ['a.example.com', '*.example.com', 'x-1.y', 'localhost'])
    t.ok(isSanDnsName(ok), ok);
  for (const bad of ['*', 'a.*', 'a.*.com', '-a.com', 'a..com', 'A.com', ''])
    t.notOk(isSanDnsName(bad), bad);
});
