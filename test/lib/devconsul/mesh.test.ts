// The mesh entry's TransparentProxy and HTTP in the embedded catalog: decoded as Consul decodes it (either
// spelling, stored in Consul's), and refused where Consul refuses it. And permissive mutual TLS:
// `MutualTLSMode` checked, and refused while the mesh entry does not allow it, as Consul does.
import t from 'tap';
import { decodeEntry, startTestConsul } from '../../helpers/devconsul.ts';
import { decodeConfigEntry } from '../../../lib/devconsul/config-entries.ts';
import { HttpError } from '../../../lib/devconsul/http-error.ts';

const decode = (entry: Record<string, unknown>) =>
  decodeConfigEntry(JSON.stringify({ Kind: 'mesh', ...entry }));

t.test('MeshDestinationsOnly is stored in Consul’s spelling', async (t) => {
  for (const given of [
    { TransparentProxy: { MeshDestinationsOnly: true } },
    { transparent_proxy: { mesh_destinations_only: true } },
    { transparentProxy: { meshDestinationsOnly: true } },
  ])
    t.same(
      decode(given),
      { Kind: 'mesh', Name: 'mesh', TransparentProxy: { MeshDestinationsOnly: true } },
      JSON.stringify(given),
    );
  t.same(decode({ TransparentProxy: {} }).TransparentProxy, {}, 'unset: false');
  t.same(decode({ TransparentProxy: { MeshDestinationsOnly: null } }).TransparentProxy, {});
});

t.test('what Consul refuses in TransparentProxy is refused', async (t) => {
  const cases: [Record<string, unknown>, string][] = [
    [{ TransparentProxy: true }, 'Request decoding failed: TransparentProxy must be an object'],
    [
      { TransparentProxy: { MeshDestinationsOnly: 'yes' } },
      'Request decoding failed: TransparentProxy.MeshDestinationsOnly must be a bool',
    ],
    [
      { TransparentProxy: { DialedDirectly: true } },
      'invalid config key "TransparentProxy.DialedDirectly"',
    ],
    [
      { TransparentProxy: { MeshDestinationsOnly: true, mesh_destinations_only: false } },
      'Request decoding failed: TransparentProxy.MeshDestinationsOnly is given twice',
    ],
    [
      { TransparentProxy: {}, transparent_proxy: {} },
      'Request decoding failed: TransparentProxy is given twice',
    ],
  ];
  for (const [given, message] of cases)
    t.throws(() => decode(given), new HttpError(400, message), JSON.stringify(given));
});

t.test(
  'HTTP.SanitizeXForwardedClientCert is stored in Consul’s spelling, and checked',
  async (t) => {
    for (const given of [
      { HTTP: { SanitizeXForwardedClientCert: true } },
      { http: { sanitize_x_forwarded_client_cert: true } },
    ])
      t.same(
        decode(given),
        { Kind: 'mesh', Name: 'mesh', HTTP: { SanitizeXForwardedClientCert: true } },
        JSON.stringify(given),
      );
    t.same(decode({ HTTP: { SanitizeXForwardedClientCert: null } }).HTTP, {}, 'null: false');
    const cases: [Record<string, unknown>, string][] = [
      [{ HTTP: 'on' }, 'Request decoding failed: HTTP must be an object'],
      [
        { HTTP: { SanitizeXForwardedClientCert: 1 } },
        'Request decoding failed: HTTP.SanitizeXForwardedClientCert must be a bool',
      ],
      [{ HTTP: { Incoming: {} } }, 'invalid config key "HTTP.Incoming"'],
    ];
    for (const [given, message] of cases)
      t.throws(() => decode(given), new HttpError(400, message), JSON.stringify(given));
  },
);

t.test(
  'MutualTLSMode and AllowEnablingPermissiveMutualTLS are decoded as Consul decodes them',
  async (t) => {
    t.equal(
      decodeEntry('service-defaults', { mutual_tls_mode: 'permissive' }).MutualTLSMode,
      'permissive',
    );
    t.equal(decodeEntry('proxy-defaults', { MutualTLSMode: 'strict' }).MutualTLSMode, 'strict');
    t.equal(
      decodeEntry('service-defaults', { MutualTLSMode: '' }).MutualTLSMode,
      '',
      '"" is unset',
    );
    t.equal(
      decode({ allow_enabling_permissive_mutual_tls: true }).AllowEnablingPermissiveMutualTLS,
      true,
    );
    const cases: [string, Record<string, unknown>, string][] = [
      [
        'service-defaults',
        { MutualTLSMode: 'lenient' },
        'Invalid MutualTLSMode "lenient". Must be one of "", "strict", or "permissive".',
      ],
      [
        'service-defaults',
        { MutualTLSMode: 'Permissive' },
        'Invalid MutualTLSMode "Permissive". Must be one of "", "strict", or "permissive".',
      ],
      [
        'proxy-defaults',
        { MutualTLSMode: 1 },
        'Request decoding failed: MutualTLSMode must be a string',
      ],
      ['service-resolver', { MutualTLSMode: 'strict' }, 'invalid config key "MutualTLSMode"'],
      [
        'mesh',
        { AllowEnablingPermissiveMutualTLS: 'yes' },
        'Request decoding failed: AllowEnablingPermissiveMutualTLS must be a bool',
      ],
    ];
    for (const [kind, body, message] of cases)
      t.throws(() => decodeEntry(kind, body), new HttpError(400, message), JSON.stringify(body));
  },
);

t.test(
  'permissive is refused until the mesh entry allows it; turning the flag off is allowed',
  async (t) => {
    const dc = await startTestConsul(t);
    const put = async (body: Record<string, unknown>) => {
      const res = await fetch(`${dc.url}/v1/config`, { method: 'PUT', body: JSON.stringify(body) });
      return { status: res.status, text: await res.text() };
    };
    const refused =
      'cannot set MutualTLSMode=permissive because AllowEnablingPermissiveMutualTLS=false in the mesh config entry';
    const sd = { Kind: 'service-defaults', Name: 'api', MutualTLSMode: 'permissive' };
    const pd = { Kind: 'proxy-defaults', Name: 'global', MutualTLSMode: 'permissive' };

    t.same(await put(sd), { status: 400, text: refused }, 'no mesh entry: refused');
    t.same(await put(pd), { status: 400, text: refused }, 'proxy-defaults too');
    t.equal(
      (await fetch(`${dc.url}/v1/config/service-defaults/api`)).status,
      404,
      'nothing stored',
    );
    t.same(
      await put({ Kind: 'service-defaults', Name: 'api', MutualTLSMode: 'strict' }),
      { status: 200, text: 'true' },
      'strict needs no flag',
    );
    t.same(await put({ Kind: 'mesh', AllowEnablingPermissiveMutualTLS: false }), {
      status: 200,
      text: 'true',
    });
    t.same(await put(sd), { status: 400, text: refused }, 'the flag false: refused');

    t.same(await put({ Kind: 'mesh', AllowEnablingPermissiveMutualTLS: true }), {
      status: 200,
      text: 'true',
    });
    t.same(await put(sd), { status: 200, text: 'true' }, 'the flag true: written');
    t.same(await put(pd), { status: 200, text: 'true' });
    const stored = (await (
      await fetch(`${dc.url}/v1/config/service-defaults/api`)
    ).json()) as Record<string, unknown>;
    t.equal(stored.MutualTLSMode, 'permissive');

    t.same(
      await put({ Kind: 'mesh', AllowEnablingPermissiveMutualTLS: false }),
      { status: 200, text: 'true' },
      'turning the flag off while permissive is in use is allowed, as in Consul',
    );
    t.same(
      await put({ Kind: 'service-defaults', Name: 'web', MutualTLSMode: 'permissive' }),
      { status: 400, text: refused },
      'but no further permissive entry is',
    );
  },
);
