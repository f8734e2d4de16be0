import t from 'tap';
import { hostname } from 'node:os';
import {
  compileAccessFormat,
  type AccessDetail,
  type AccessEntry,
} from '../../../lib/access-log/format.ts';

const NOW = Date.UTC(2026, 10, 28, 1, 2, 3, 456);

const outbound: AccessEntry = {
  direction: 'outbound',
  source: 'web',
  destination: 'api',
  protocol: 'HTTP/1.1',
  method: 'POST',
  path: '/orders',
  status: 201,
  durationMs: 12.6,
  endpoint: 'api-2',
  retries: 1,
};

const h1Detail: AccessDetail = {
  requestHeaders: ['User-Agent', 'curl/8', 'Authorization', 'Bearer s3cret', 'X-Id', 'abc'],
  responseHeaders: ['Content-Type', 'text/plain', 'Set-Cookie', 'sid=1'],
  authority: 'api.local',
  downstream: { remoteAddress: '127.0.0.1', remotePort: 40000, localAddress: '::1', localPort: 9 },
  upstream: { address: '10.0.0.2', port: 21000 },
  requestBytes: 5,
  responseBytes: 7,
};

function render(text: string, e = outbound, d: AccessDetail | undefined = h1Detail): string {
  return compileAccessFormat({ textFormat: text })!(e, d, NOW);
}

t.test('a text format fills each operator from the request, one line each', async (t) => {
  t.equal(
    render('%START_TIME% %REQ(:METHOD)% %REQ(:PATH)% %PROTOCOL% %RESPONSE_CODE% %DURATION%ms'),
    '2026-11-28T01:02:03.443Z POST /orders HTTP/1.1 201 13ms\n',
    'START_TIME is when the request began (now less its duration); DURATION whole ms',
  );
  t.equal(
    render('%REQ(user-agent)%|%REQ(X-ID)%|%REQ(:AUTHORITY)%|%RESP(CONTENT-TYPE)%'),
    'curl/8|abc|api.local|text/plain\n',
    'header names in any case',
  );
  t.equal(
    render('%REQ(AUTHORIZATION)% %RESP(set-cookie)% %REQ(cookie)%'),
    '[redacted] [redacted] [redacted]\n',
    'credentials are never written, even when asked for (and even when absent)',
  );
  t.equal(
    render('%REQ(X-MISSING?USER-AGENT)% %REQ(X-MISSING)% %REQ(USER-AGENT):4%'),
    'curl/8 - curl\n',
  );
  t.equal(
    render(
      '%UPSTREAM_HOST% %UPSTREAM_CLUSTER% %UPSTREAM_REQUEST_ATTEMPT_COUNT% %DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %BYTES_RECEIVED% %BYTES_SENT%',
    ),
    '10.0.0.2:21000 api 2 127.0.0.1:40000 [::1]:9 5 7\n',
  );
  t.equal(
    render(
      '%REMORA_DIRECTION% %REMORA_SOURCE%->%REMORA_DESTINATION% %REMORA_ENDPOINT% %REMORA_ERROR% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %ROUTE_NAME% %HOSTNAME%',
    ),
    `outbound web->api api-2 - - via_upstream - ${hostname()}\n`,
    'an answer from the upstream has no flags; operators Remora has nothing for write "-"',
  );
  const whole = { ...outbound, durationMs: 13 };
  t.equal(
    render('%START_TIME(%Y/%m/%d %H:%M:%S.%3f %z %s %6f %f %%)%', whole),
    `2026/11/28 01:02:03.443 +0000 ${Math.floor(Date.UTC(2026, 10, 28, 1, 2, 3) / 1000)} 443000 443000000 %\n`,
  );
  t.equal(render('plain text, no operator\n'), 'plain text, no operator\n', 'one newline');
});

t.test('what the proxy made up, HTTP/2 headers, TCP and the inbound side', async (t) => {
  const made: AccessEntry = { ...outbound, status: 503, error: 'REMORA_E_PROXY_NO_ENDPOINTS' };
  t.equal(
    render('%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %REMORA_ERROR%', made),
    '503 UH REMORA_E_PROXY_NO_ENDPOINTS REMORA_E_PROXY_NO_ENDPOINTS\n',
  );
  const h2: AccessEntry = { ...outbound, protocol: 'HTTP/2', method: 'GET', path: '/a' };
  const h2Headers = {
    ':method': 'GET',
    ':path': '/a?token=x',
    ':authority': 'api:443',
    'x-multi': ['1', '2'],
  };
  t.equal(
    render('%REQ(:PATH)% %REQ(:AUTHORITY)% %REQ(X-MULTI)% %RESP(:STATUS)%', h2, {
      requestHeaders: h2Headers,
      responseHeaders: { ':status': 200 },
    }),
    '/a api:443 1,2 200\n',
    'the path never carries its query string',
  );
  const tcp: AccessEntry = {
    direction: 'inbound',
    source: 'web',
    destination: 'db',
    protocol: 'tcp',
    durationMs: 1000,
    bytesIn: 10,
    bytesOut: 20,
  };
  t.equal(
    render(
      '%PROTOCOL% %RESPONSE_CODE% %BYTES_RECEIVED% %BYTES_SENT% %UPSTREAM_CLUSTER% %UPSTREAM_REQUEST_ATTEMPT_COUNT% %DOWNSTREAM_PEER_URI_SAN% %REQ(:METHOD)%',
      tcp,
      { downstreamPeer: 'spiffe://td/ns/default/dc/dc1/svc/web' },
    ),
    '- 0 10 20 local_app 1 spiffe://td/ns/default/dc/dc1/svc/web -\n',
  );
  t.equal(
    compileAccessFormat({ textFormat: '%UPSTREAM_HOST% %BYTES_SENT%' })!(outbound, undefined, NOW),
    '- -\n',
    'no detail given',
  );
});

t.test('a JSON format keeps numbers numbers, writes null for nothing, and nests', async (t) => {
  const f = compileAccessFormat({
    jsonFormat: JSON.stringify({
      start_time: '%START_TIME%',
      code: '%RESPONSE_CODE%',
      duration: '%DURATION%',
      flags: '%RESPONSE_FLAGS%',
      line: '%REQ(:METHOD)% %REQ(:PATH)% %REQ(X-NONE)%',
      attempts: '%UPSTREAM_REQUEST_ATTEMPT_COUNT%',
      fixed: 3,
      on: true,
      nothing: null,
      upstream: { host: '%UPSTREAM_HOST%', cluster: '%UPSTREAM_CLUSTER%' },
    }),
  })!;
  const line = f(outbound, h1Detail, NOW);
  t.ok(line.endsWith('}\n') && !line.slice(0, -1).includes('\n'), 'one line');
  t.same(JSON.parse(line), {
    start_time: '2026-11-28T01:02:03.443Z',
    code: 201,
    duration: 13,
    flags: null,
    line: 'POST /orders -',
    attempts: 2,
    fixed: 3,
    on: true,
    nothing: null,
    upstream: { host: '10.0.0.2:21000', cluster: 'api' },
  });
  t.same(
    JSON.parse(
      compileAccessFormat({ jsonFormat: '{"ua":"%REQ(USER-AGENT)%"}' })!(
        outbound,
        { requestHeaders: ['user-agent', 'a "quoted"\nvalue'] },
        NOW,
      ),
    ),
    { ua: 'a "quoted"\nvalue' },
    'values are escaped',
  );
});

t.test('neither format: the proxy keeps its own line', async (t) => {
  t.equal(compileAccessFormat({}), undefined);
});

t.test(
  'a format that cannot apply is refused with what is wrong and what is allowed',
  async (t) => {
    const refused = (spec: Parameters<typeof compileAccessFormat>[0], pattern: RegExp) =>
      t.throws(() => compileAccessFormat(spec), pattern, JSON.stringify(spec));
    refused(
      { textFormat: '%UPSTREAM_COLOUR%' },
      /TextFormat: %UPSTREAM_COLOUR% is not an operator Remora's proxies know; they know START_TIME, REQ, RESP, DURATION/,
    );
    refused(
      { textFormat: '100% sure' },
      /TextFormat: the "%" at character 4 does not start an operator/,
    );
    refused({ textFormat: '%DURATION(ms)%' }, /%DURATION% takes no argument/);
    refused({ textFormat: '%DURATION:3%' }, /only %REQ\(...\)% and %RESP\(...\)% take a length/);
    refused({ textFormat: '%REQ()%' }, /%REQ\(...\)% needs a header name/);
    refused({ textFormat: '%REQ(A?B?C)%' }, /must name a header, or a header and a fallback/);
    refused({ textFormat: '%START_TIME(%Q)%' }, /uses "%Q"; the specifiers are %Y %m %d/);
    refused({ textFormat: 'a\nb' }, /TextFormat must be one line/);
    refused({ textFormat: '' }, /TextFormat must be one line that is not empty/);
    refused({ textFormat: '%DURATION%', jsonFormat: '{}' }, /cannot both be set/);
    refused({ jsonFormat: '[1]' }, /JSONFormat must be a JSON object/);
    refused({ jsonFormat: 'nope' }, /JSONFormat is not JSON/);
    refused(
      { jsonFormat: '{"a":{"b":["%DURATION%"]}}' },
      /JSONFormat\.a\.b must be a string, number, boolean or object/,
    );
    refused({ jsonFormat: '{"a":"%NOPE%"}' }, /JSONFormat\.a: %NOPE% is not an operator/);
  },
);
