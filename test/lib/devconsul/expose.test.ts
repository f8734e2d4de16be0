// `Expose` of service-defaults and proxy-defaults in the embedded catalog: decoded as Consul
// decodes it (either spelling, stored in Consul's JSON one), refused where Consul's decoder
// refuses it, and otherwise stored unchecked, as Consul stores it (the agents report bad values).
import t from 'tap';
import { decodeEntry as entry, startTestConsul } from '../../helpers/devconsul.ts';
import { HttpError } from '../../../lib/devconsul/http-error.ts';

t.test("Expose is stored in Consul's spelling, zero values left out", async (t) => {
  const stored = {
    Checks: true,
    Paths: [
      { ListenerPort: 21500, Path: '/metrics', LocalPathPort: 9102 },
      {
        ListenerPort: 21501,
        Path: '/grpc.health.v1.Health/Check',
        LocalPathPort: 9090,
        Protocol: 'http2',
      },
    ],
  };
  for (const given of [
    { Expose: stored },
    {
      expose: {
        checks: true,
        paths: [
          { listener_port: 21500, path: '/metrics', local_path_port: 9102, protocol: '' },
          {
            ListenerPort: 21501,
            Path: '/grpc.health.v1.Health/Check',
            localPathPort: 9090,
            Protocol: 'http2',
          },
        ],
      },
    },
  ]) {
    t.same(entry('proxy-defaults', given).Expose, stored, JSON.stringify(given));
    t.same(entry('service-defaults', given).Expose, stored);
  }
  t.same(entry('service-defaults', { Expose: { Checks: false, Paths: [] } }).Expose, {});
  t.same(entry('service-defaults', { Expose: null }).Expose, {}, 'null: the zero value');
  t.same(
    entry('proxy-defaults', { Expose: { Paths: [{ Path: 'health', ListenerPort: 0 }] } }).Expose,
    { Paths: [{ Path: 'health' }] },
    'values are not checked on write, as in Consul: the agents report them',
  );
});

t.test("what Consul's decoder refuses in Expose is refused", async (t) => {
  const cases: [string, Record<string, unknown>, string][] = [
    ['service-resolver', { Expose: { Checks: true } }, 'invalid config key "Expose"'],
    ['mesh', { Expose: {} }, 'invalid config key "Expose"'],
    ['service-defaults', { Expose: true }, 'Request decoding failed: Expose must be an object'],
    [
      'proxy-defaults',
      { Expose: { Checks: 'yes' } },
      'Request decoding failed: Expose.Checks must be a bool',
    ],
    ['proxy-defaults', { Expose: { Check: true } }, 'invalid config key "Expose.Check"'],
    [
      'service-defaults',
      { Expose: { Paths: { Path: '/x' } } },
      'Request decoding failed: Expose.Paths must be an array',
    ],
    [
      'service-defaults',
      { Expose: { Paths: ['/x'] } },
      'Request decoding failed: Expose.Paths[0] must be an object',
    ],
    [
      'service-defaults',
      { Expose: { Paths: [{ Path: '/x', ListenerPort: '21500' }] } },
      'Request decoding failed: Expose.Paths[0].ListenerPort must be an integer',
    ],
    [
      'service-defaults',
      { Expose: { Paths: [{ Path: '/x', LocalPathPort: 80.5 }] } },
      'Request decoding failed: Expose.Paths[0].LocalPathPort must be an integer',
    ],
    [
      'service-defaults',
      { Expose: { Paths: [{ Path: 7 }] } },
      'Request decoding failed: Expose.Paths[0].Path must be a string',
    ],
    [
      'service-defaults',
      { Expose: { Paths: [{ Path: '/x', Port: 1 }] } },
      'invalid config key "Expose.Paths[0].Port"',
    ],
    [
      'service-defaults',
      { Expose: { Paths: [{ ListenerPort: 1, listener_port: 2 }] } },
      'Request decoding failed: Expose.Paths[0].ListenerPort is given twice',
    ],
  ];
  for (const [kind, body, message] of cases)
    t.throws(() => entry(kind, body), new HttpError(400, message), JSON.stringify(body));
});

t.test('an Expose written through the API reads back as stored', async (t) => {
  const dc = await startTestConsul(t);
  const put = await fetch(`${dc.url}/v1/config`, {
    method: 'PUT',
    body: JSON.stringify({
      kind: 'service-defaults',
      name: 'api',
      expose: { paths: [{ path: '/health', local_path_port: 8080, listener_port: 21500 }] },
    }),
  });
  t.equal(put.status, 200);
  const got = (await (await fetch(`${dc.url}/v1/config/service-defaults/api`)).json()) as {
    Expose: unknown;
  };
  t.same(got.Expose, { Paths: [{ ListenerPort: 21500, Path: '/health', LocalPathPort: 8080 }] });
  const bad = await fetch(`${dc.url}/v1/config`, {
    method: 'PUT',
    body: JSON.stringify({ Kind: 'proxy-defaults', Name: 'global', Expose: { Checks: 1 } }),
  });
  t.equal(bad.status, 400);
  t.equal(await bad.text(), 'Request decoding failed: Expose.Checks must be a bool');
  t.equal((await fetch(`${dc.url}/v1/config/proxy-defaults/global`)).status, 404, 'not stored');
});
