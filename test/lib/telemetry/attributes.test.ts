import t from 'tap';
import { SpanKind, SpanStatusCode } from '@opentelemetry/api';
import {
  errorAttributes,
  httpClientAttributes,
  httpMethodAttributes,
  httpServerAttributes,
  httpSpanName,
  httpSpanStatus,
  tcpBytesAttributes,
  tcpConnectionAttributes,
} from '../../../lib/telemetry/index.ts';

t.test('server request attributes follow the HTTP semantic conventions', async (t) => {
  t.same(
    httpServerAttributes({
      method: 'post',
      target: '/orders?id=1',
      scheme: 'https',
      serverAddress: 'api',
      serverPort: 21000,
      clientAddress: '10.0.0.5',
      clientPort: 50123,
      userAgent: 'curl/8',
      protocolVersion: '1.1',
      route: '/orders',
    }),
    {
      'http.request.method': 'POST',
      'http.request.method_original': 'post',
      'url.path': '/orders',
      'url.query': 'id=1',
      'url.scheme': 'https',
      'http.route': '/orders',
      'server.address': 'api',
      'server.port': 21000,
      'client.address': '10.0.0.5',
      'network.peer.address': '10.0.0.5',
      'client.port': 50123,
      'network.peer.port': 50123,
      'user_agent.original': 'curl/8',
      'network.protocol.version': '1.1',
    },
  );
});

t.test('client attempt attributes count resends from the second attempt on', async (t) => {
  const first = httpClientAttributes({
    method: 'GET',
    url: 'https://10.0.0.7:21000/x',
    serverAddress: '10.0.0.7',
    serverPort: 21000,
    attempt: 1,
  });
  t.equal(first['http.request.resend_count'], undefined);
  t.equal(first['remora.attempt'], 1);
  const third = httpClientAttributes({
    method: 'GET',
    url: 'https://10.0.0.8:21000/x',
    serverAddress: '10.0.0.8',
    serverPort: 21000,
    attempt: 3,
  });
  t.equal(third['http.request.resend_count'], 2);
  t.equal(third['url.full'], 'https://10.0.0.8:21000/x');
});

t.test('unknown methods are reported as _OTHER and never become span names', async (t) => {
  t.same(httpMethodAttributes('BREW'), {
    'http.request.method': '_OTHER',
    'http.request.method_original': 'BREW',
  });
  t.equal(httpSpanName('BREW'), 'HTTP');
  t.equal(httpSpanName('get', '/orders/{id}'), 'GET /orders/{id}');
});

t.test('5xx is an error on both sides, 4xx only on the client side', async (t) => {
  t.same(httpSpanStatus(503, SpanKind.SERVER), { code: SpanStatusCode.ERROR });
  t.equal(httpSpanStatus(404, SpanKind.SERVER), undefined);
  t.same(httpSpanStatus(404, SpanKind.CLIENT), { code: SpanStatusCode.ERROR });
  t.equal(httpSpanStatus(200, SpanKind.CLIENT), undefined);
});

t.test('TCP connection spans carry direction, peer and byte counts', async (t) => {
  t.same(
    tcpConnectionAttributes({
      direction: 'outbound',
      peerAddress: '10.0.0.9',
      peerPort: 5432,
      upstream: 'db',
    }),
    {
      'network.transport': 'tcp',
      'remora.direction': 'outbound',
      'remora.protocol': 'tcp',
      'network.peer.address': '10.0.0.9',
      'network.peer.port': 5432,
      'remora.upstream': 'db',
    },
  );
  t.same(tcpBytesAttributes(10, 20), { 'remora.bytes.sent': 10, 'remora.bytes.received': 20 });
  t.same(errorAttributes('ECONNREFUSED', 'REMORA_E_PROXY_UPSTREAM_UNAVAILABLE'), {
    'error.type': 'ECONNREFUSED',
    'remora.error.code': 'REMORA_E_PROXY_UPSTREAM_UNAVAILABLE',
  });
});
