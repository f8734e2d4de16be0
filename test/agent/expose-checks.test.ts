// Which checks `proxy.expose.checks` serves through the sidecar, and how they are pointed at it
// (docs/agent.md, "Exposed paths").
import t from 'tap';
import type { RemoraError } from '../../lib/errors/index.ts';
import { checkExposures, GRPC_HEALTH_PATH, rerouteCheck } from '../../agent/expose-checks.ts';

t.test('HTTP and gRPC checks become one exposed path per path, port and protocol', async (t) => {
  const notes: RemoraError[] = [];
  const out = checkExposures(
    [
      { HTTP: 'http://localhost:8080/health', Interval: '10s' },
      { http: 'http://127.0.0.1:8080/health?full=1', interval: '5s' },
      { http: 'http://[::1]/ready', interval: '5s' },
      { grpc: '127.0.0.1:9090', interval: '5s' },
      { grpc: 'localhost:9090/orders.v1.Orders', interval: '5s' },
      { tcp: '127.0.0.1:8080', interval: '5s' },
      { ttl: '30s' },
    ],
    'x.checks',
    notes,
  );
  t.same(out, [
    { checks: [0, 1], path: '/health', localPathPort: 8080, protocol: 'http' },
    { checks: [2], path: '/ready', localPathPort: 80, protocol: 'http' },
    { checks: [3, 4], path: GRPC_HEALTH_PATH, localPathPort: 9090, protocol: 'http2' },
  ]);
  t.same(notes, [], 'TCP and TTL checks are not exposed, and that is no problem');
});

t.test('a check that cannot be served in plain HTTP or h2c is left alone and said', async (t) => {
  const notes: RemoraError[] = [];
  const out = checkExposures(
    [
      { Name: 'secure', HTTP: 'https://127.0.0.1:8443/health' },
      { CheckID: 'rpc-tls', GRPC: '127.0.0.1:9090', GRPCUseTLS: true },
      { grpc: '127.0.0.1', grpc_use_tls: false },
      { http: 'not a url' },
      { http: 42 },
      { grpc: '127.0.0.1:9091', grpc_use_tls: false },
    ],
    'x.checks',
    notes,
  );
  t.same(out, [{ checks: [5], path: GRPC_HEALTH_PATH, localPathPort: 9091, protocol: 'http2' }]);
  t.same(
    notes.map((n) => [n.code, n.message]),
    [
      [
        'REMORA_E_AGENT_DEFINITION_NOT_APPLIED',
        'x.checks is not applied to check 0 ("secure"): its URL is https, and an exposed listener speaks plain HTTP; the check keeps probing the app directly',
      ],
      [
        'REMORA_E_AGENT_DEFINITION_NOT_APPLIED',
        'x.checks is not applied to check 1 ("rpc-tls"): it uses TLS, and an exposed listener speaks plain h2c; the check keeps probing the app directly',
      ],
      [
        'REMORA_E_AGENT_DEFINITION_NOT_APPLIED',
        'x.checks is not applied to check 2 (#2): its grpc "127.0.0.1" names no port; the check keeps probing the app directly',
      ],
      [
        'REMORA_E_AGENT_DEFINITION_NOT_APPLIED',
        'x.checks is not applied to check 3 (#3): its http "not a url" is not a URL; the check keeps probing the app directly',
      ],
      [
        'REMORA_E_AGENT_DEFINITION_NOT_APPLIED',
        'x.checks is not applied to check 4 (#4): its http is not a string; the check keeps probing the app directly',
      ],
    ],
  );
});

t.test('a rerouted check keeps its path, query, service and every other field', async (t) => {
  t.same(
    rerouteCheck(
      { Name: 'live', HTTP: 'http://127.0.0.1:8080/health?full=1', Interval: '10s' },
      '10.0.0.5',
      21500,
    ),
    { Name: 'live', HTTP: 'http://10.0.0.5:21500/health?full=1', Interval: '10s' },
  );
  t.same(rerouteCheck({ http: 'http://localhost:8080/' }, 'fd00::5', 21501), {
    http: 'http://[fd00::5]:21501/',
  });
  t.same(
    rerouteCheck({ grpc: '127.0.0.1:9090/orders.v1.Orders', interval: '5s' }, '10.0.0.5', 21502),
    {
      grpc: '10.0.0.5:21502/orders.v1.Orders',
      interval: '5s',
    },
  );
  t.same(rerouteCheck({ GRPC: '127.0.0.1:9090' }, '127.0.0.1', 21503), { GRPC: '127.0.0.1:21503' });
});
