import t from 'tap';
import { runRemora } from '../../helpers/cli.ts';

t.test(
  'remora explain --code tells what a proxy error means and what to do, offline',
  async (t) => {
    const r = await runRemora(
      ['explain', 'web', 'api', '--code', 'REMORA_E_PROXY_INTENTION_DENIED'],
      { timeoutMs: 30_000 },
    );
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, /REMORA_E_PROXY_INTENTION_DENIED \(HTTP 403\)/);
    t.match(r.stdout, /remora intention create/);
    const bad = await runRemora(['explain', 'web', 'api', '--code', 'NOPE'], { timeoutMs: 30_000 });
    t.equal(bad.code, 2);
    t.match(bad.stderr, /not a Remora error code/);
  },
);

t.test("remora explain says when the destination's sidecars also take plain callers", async (t) => {
  const { mutualTlsNote } = await import('../../../cli/commands/explain.ts');
  const permissive = { MutualTLSMode: 'permissive' };
  const allowed = { AllowEnablingPermissiveMutualTLS: true };
  t.equal(
    mutualTlsNote('api', permissive, undefined, allowed),
    "api's transparent instances also take plain connections (MutualTLSMode permissive, its service-defaults): callers outside the mesh reach its app with no intention checked; what follows applies to mesh callers only",
  );
  t.match(
    mutualTlsNote('api', undefined, permissive, allowed),
    /MutualTLSMode permissive, proxy-defaults global/,
    'from proxy-defaults when the service sets none',
  );
  t.equal(
    mutualTlsNote('api', { MutualTLSMode: 'strict' }, permissive, allowed),
    null,
    "the service's own strict wins over proxy-defaults",
  );
  t.equal(
    mutualTlsNote('api', permissive, undefined, { AllowEnablingPermissiveMutualTLS: false }),
    "api's sidecars require mTLS: MutualTLSMode is permissive in its service-defaults, but the mesh entry does not set AllowEnablingPermissiveMutualTLS = true, so it is not applied",
  );
  t.equal(mutualTlsNote('api', undefined, undefined, allowed), null, 'strict: nothing to say');
});
