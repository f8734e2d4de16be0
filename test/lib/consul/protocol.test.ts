import t from 'tap';
import { servedProtocol, type ProtocolLookup } from '../../../lib/consul/protocol.ts';

function lookup(o: {
  registered?: string | null;
  serviceDefaults?: Record<string, string>;
  proxyDefaults?: string;
  noConfig?: boolean;
}): ProtocolLookup {
  return {
    catalog: {
      async service(name) {
        if (o.registered === undefined || name !== 'api-sidecar-proxy') return [];
        return [
          { ServiceProxy: { Config: o.registered === null ? {} : { protocol: o.registered } } },
        ];
      },
    },
    ...(o.noConfig
      ? {}
      : {
          config: {
            async list(kind: string) {
              if (kind === 'service-defaults')
                return {
                  entries: Object.entries(o.serviceDefaults ?? {}).map(([Name, Protocol]) => ({
                    Name,
                    Protocol,
                  })),
                };
              return {
                entries: o.proxyDefaults
                  ? [{ Name: 'global', Config: { protocol: o.proxyDefaults } }]
                  : [],
              };
            },
          },
        }),
  };
}

t.test('the protocol comes from the first place that sets it, as agents resolve it', async (t) => {
  t.equal(await servedProtocol(lookup({}), 'api'), null, 'no sidecar registered: nothing to say');
  t.same(
    await servedProtocol(lookup({ registered: 'HTTP', serviceDefaults: { api: 'grpc' } }), 'api'),
    {
      protocol: 'http',
      source: 'registration',
    },
  );
  t.same(
    await servedProtocol(
      lookup({
        registered: null,
        serviceDefaults: { api: 'grpc', web: 'http' },
        proxyDefaults: 'http2',
      }),
      'api',
    ),
    { protocol: 'grpc', source: 'service-defaults' },
  );
  t.same(
    await servedProtocol(
      lookup({ registered: null, serviceDefaults: { web: 'http' }, proxyDefaults: 'http2' }),
      'api',
    ),
    { protocol: 'http2', source: 'proxy-defaults' },
  );
  t.same(
    await servedProtocol(
      lookup({ registered: 'carrier-pigeon', serviceDefaults: { api: 'nope' } }),
      'api',
    ),
    { protocol: 'tcp', source: 'default' },
    'values no proxy speaks are skipped',
  );
  t.same(await servedProtocol(lookup({ registered: null, noConfig: true }), 'api'), {
    protocol: 'tcp',
    source: 'default',
  });
});

t.test('a Consul failure rejects (the caller decides what to say)', async (t) => {
  const failing: ProtocolLookup = {
    catalog: {
      async service() {
        throw new Error('connect ECONNREFUSED');
      },
    },
  };
  await t.rejects(servedProtocol(failing, 'api'), /ECONNREFUSED/);
});
