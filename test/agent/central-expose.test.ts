import t from 'tap';
import { exposeLayerOf, mergeExpose, type ExposeLayer } from '../../agent/central-expose.ts';
import type { ExposePath } from '../../lib/proxy-api/index.ts';

const path = (p: string, listenerPort: number, localPathPort = 8080): ExposePath => ({
  path: p,
  localPathPort,
  listenerPort,
  protocol: 'http',
});

t.test(
  "Consul's merge: Checks if any says so, Paths whole from the first that lists any",
  async (t) => {
    const sd: ExposeLayer = { checks: false, paths: [path('/sd', 21501)] };
    const pd: ExposeLayer = { checks: true, paths: [path('/pd', 21502), path('/pd2', 21503)] };
    const none = { paths: [], checks: false };

    t.same(
      mergeExpose({ definition: none, serviceDefaults: sd, proxyDefaults: pd }),
      { paths: [path('/sd', 21501)], pathsFrom: 'service-defaults', checksFrom: 'proxy-defaults' },
      "service-defaults' paths replace proxy-defaults' (not appended); proxy-defaults' Checks still counts",
    );
    t.same(
      mergeExpose({
        definition: { paths: [path('/own', 21500)], checks: false },
        serviceDefaults: sd,
        proxyDefaults: pd,
      }),
      { paths: [path('/own', 21500)], pathsFrom: 'definition', checksFrom: 'proxy-defaults' },
      "the definition's paths win over both entries'",
    );
    t.same(
      mergeExpose({ definition: none, serviceDefaults: { checks: true }, proxyDefaults: pd }),
      { paths: pd.paths, pathsFrom: 'proxy-defaults', checksFrom: 'service-defaults' },
      'service-defaults without paths leaves them to proxy-defaults',
    );
    t.same(
      mergeExpose({
        definition: { paths: [], checks: true },
        serviceDefaults: { checks: false, paths: [] },
        proxyDefaults: null,
      }),
      { paths: [], pathsFrom: 'service-defaults', checksFrom: 'definition' },
      'an entry that lists paths, none of them usable, still replaces those under it',
    );
    t.same(
      mergeExpose({ definition: none, serviceDefaults: null, proxyDefaults: null }),
      { paths: [], pathsFrom: null, checksFrom: null },
      'nothing set: nothing exposed',
    );
  },
);

t.test(
  "an entry's Expose in Consul's spelling or snake_case; protocol defaults to http",
  async (t) => {
    const found = new Map<string, string>();
    t.same(
      exposeLayerOf(
        {
          Checks: true,
          Paths: [
            { Path: '/metrics', LocalPathPort: 9102, ListenerPort: 21500 },
            {
              path: '/grpc.health.v1.Health/Check',
              local_path_port: 9090,
              listener_port: 21501,
              protocol: 'HTTP2',
            },
          ],
        },
        'proxy-defaults global',
        'global/expose',
        found,
      ),
      {
        checks: true,
        paths: [
          { path: '/metrics', localPathPort: 9102, listenerPort: 21500, protocol: 'http' },
          {
            path: '/grpc.health.v1.Health/Check',
            localPathPort: 9090,
            listenerPort: 21501,
            protocol: 'http2',
          },
        ],
      },
    );
    t.equal(found.size, 0, 'nothing reported');
    t.equal(exposeLayerOf({}, 'x', 'k', found), null, 'an empty block sets nothing');
    t.equal(exposeLayerOf({ Checks: false, Paths: [] }, 'x', 'k', found), null);
  },
);

t.test('each bad value is reported and left out; the rest of the block applies', async (t) => {
  const found = new Map<string, string>();
  const layer = exposeLayerOf(
    {
      Checks: 'yes',
      Paths: [
        { Path: 'health', LocalPathPort: 8080, ListenerPort: 21500 },
        { Path: '/ok', LocalPathPort: 8080, ListenerPort: 21501 },
        { Path: '/port', LocalPathPort: 8080, ListenerPort: 70000 },
        { Path: '/proto', LocalPathPort: 8080, ListenerPort: 21502, Protocol: 'grpc' },
        { Path: '/again', LocalPathPort: 8080, ListenerPort: 21501 },
        { Path: 7, LocalPathPort: 8080, ListenerPort: 21503 },
        'nope',
      ],
    },
    'service-defaults of api',
    'e/api',
    found,
  );
  t.same(layer, { checks: false, paths: [path('/ok', 21501)] });
  t.same(
    [...found.values()],
    [
      'service-defaults of api: Expose.Checks must be true or false, got "yes"; it is read as false (checks keep probing the app directly)',
      'service-defaults of api: Expose.Paths[0] Path must start with /, got "health"; that path is not exposed (the entry\'s other paths are)',
      "service-defaults of api: Expose.Paths[2] ListenerPort must be a port from 1 to 65535, got 70000; that path is not exposed (the entry's other paths are)",
      'service-defaults of api: Expose.Paths[3] Protocol must be "http" or "http2", got "grpc"; that path is not exposed (the entry\'s other paths are)',
      "service-defaults of api: Expose.Paths[4] ListenerPort 21501 is already Paths[1]'s; that path is not exposed (the entry's other paths are)",
      "service-defaults of api: Expose.Paths[5] Path must be a string, got 7; that path is not exposed (the entry's other paths are)",
      'service-defaults of api: Expose.Paths[6] must be an object, got "nope"; that path is not exposed (the entry\'s other paths are)',
    ],
  );
  t.ok(
    [...found.keys()].every((k) => k.startsWith('e/api')),
    'under the entry key',
  );

  const other = new Map<string, string>();
  t.equal(exposeLayerOf([1], 'proxy-defaults global', 'global/expose', other), null);
  t.equal(
    exposeLayerOf({ Checks: true, Paths: {} }, 'proxy-defaults global', 'g', other)?.checks,
    true,
  );
  t.same(
    [...other.values()],
    [
      'proxy-defaults global: Expose must be an object, got [1]; it is ignored',
      'proxy-defaults global: Expose.Paths must be an array, got {}; it is ignored',
    ],
  );
});
