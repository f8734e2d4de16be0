// The mesh entry's TransparentProxy in the embedded catalog: decoded as Consul decodes it (either
// spelling, stored in Consul's), and refused where Consul refuses it.
import t from 'tap';
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
