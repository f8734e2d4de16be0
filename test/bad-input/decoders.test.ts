// Property-based tests for the decoders that had none: the agent↔proxy frame stream and frames,
// the proxy snapshot, and SPIFFE IDs. Each decoder either returns a value or throws a RemoraError
// with its area's code — never another exception, never a silently wrong value.
import t from 'tap';
import fc from 'fast-check';
import {
  decodeAgentFrame,
  decodeProxyFrame,
  decodeProxySnapshot,
  encodeFrame,
  FrameDecoder,
} from '../../lib/proxy-api/index.ts';
import { formatSpiffeId, parseSpiffeId } from '../../lib/identity/index.ts';
import { RemoraError } from '../../lib/errors/index.ts';
import { createMeshCerts, makeSnapshot, makeUpstream } from '../helpers/mesh-certs.ts';

function codeOf(fn: () => unknown): string | null {
  try {
    fn();
    return null;
  } catch (err) {
    if (err instanceof RemoraError) return err.code;
    throw err;
  }
}

const frames = fc.array(
  fc.oneof(
    fc.record({ v: fc.constant(1), type: fc.constant('ping') }),
    fc.record({ v: fc.constant(1), type: fc.constant('pong') }),
    fc.record({ v: fc.constant(1), type: fc.constant('drain'), deadlineMs: fc.nat() }),
    fc.record({
      v: fc.constant(1),
      type: fc.constant('status'),
      ready: fc.boolean(),
      appliedVersion: fc.option(fc.nat(), { nil: null }),
      reason: fc.string(),
    }),
  ),
  { maxLength: 8 },
);

t.test('a frame stream decodes to the same frames however it is cut into chunks', async (t) => {
  fc.assert(
    fc.property(frames, fc.array(fc.nat({ max: 64 }), { maxLength: 20 }), (list, cuts) => {
      const bytes = Buffer.concat(list.map((f) => encodeFrame(f as never)));
      const d = new FrameDecoder();
      const out: unknown[] = [];
      let at = 0;
      for (const c of cuts) {
        const end = Math.min(bytes.length, at + c);
        out.push(...d.push(bytes.subarray(at, end)));
        at = end;
      }
      out.push(...d.push(bytes.subarray(at)));
      return JSON.stringify(out) === JSON.stringify(list) && d.pendingBytes === 0;
    }),
    { numRuns: 500 },
  );
  t.pass('500 random streams, randomly chunked, decoded exactly');
});

t.test(
  'random bytes on the agent socket give frames or coded errors, bounded in memory',
  async (t) => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 200 }), { maxLength: 10 }), (chunks) => {
        const d = new FrameDecoder({ maxFrameBytes: 256 });
        for (const c of chunks) {
          const code = codeOf(() => {
            for (const v of d.push(Buffer.from(c))) {
              codeOf(() => decodeAgentFrame(v));
              codeOf(() => decodeProxyFrame(v));
            }
          });
          if (code !== null && !/^REMORA_E_PROXY_(FRAME|SNAPSHOT)_/.test(code)) return false;
          if (d.pendingBytes > 256) return false;
        }
        return true;
      }),
      { numRuns: 1000 },
    );
    t.pass('1000 random byte streams');
  },
);

t.test('any JSON value is a valid frame or a coded refusal', async (t) => {
  fc.assert(
    fc.property(fc.jsonValue(), (v) => {
      for (const decode of [decodeAgentFrame, decodeProxyFrame, decodeProxySnapshot]) {
        const code = codeOf(() => decode(v));
        if (code !== null && !/^REMORA_E_PROXY_/.test(code)) return false;
      }
      return true;
    }),
    { numRuns: 1000 },
  );
  t.pass('1000 random JSON values');
});

t.test(
  'a snapshot with one field replaced by a random value is valid or refused with a code',
  async (t) => {
    const mesh = createMeshCerts();
    const snapshot = makeSnapshot(mesh, mesh.leaf('web'), {
      upstreams: [makeUpstream(mesh, 'api', [1234])],
    }) as unknown as Record<string, unknown>;
    const paths: string[][] = [];
    const walk = (o: unknown, p: string[]): void => {
      if (typeof o !== 'object' || o === null) return void paths.push(p);
      for (const [k, v] of Object.entries(o)) {
        paths.push([...p, k]);
        walk(v, [...p, k]);
      }
    };
    walk(snapshot, []);
    t.ok(codeOf(() => decodeProxySnapshot(snapshot)) === null, 'the unchanged snapshot is valid');
    let refused = 0;
    fc.assert(
      fc.property(
        fc.constantFrom(...paths.filter((p) => p.length > 0)),
        fc.jsonValue(),
        (path, value) => {
          const copy = structuredClone(snapshot);
          let o = copy;
          for (const k of path.slice(0, -1)) o = o[k] as Record<string, unknown>;
          o[path[path.length - 1]!] = value;
          const code = codeOf(() => decodeProxySnapshot(copy));
          if (code !== null) refused += 1;
          return code === null || code === 'REMORA_E_PROXY_SNAPSHOT_INVALID';
        },
      ),
      { numRuns: 1000 },
    );
    t.ok(
      refused > 500,
      `${refused} of 1000 mutated snapshots refused with REMORA_E_PROXY_SNAPSHOT_INVALID`,
    );
  },
);

t.test('a SPIFFE ID parses only when it formats back to the same string', async (t) => {
  const name = fc.stringMatching(/^[a-z0-9][a-z0-9-]{0,20}$/);
  fc.assert(
    fc.property(
      fc.oneof(
        fc.string(),
        fc.webUrl(),
        fc
          .tuple(name, name, name, fc.constantFrom('', '/', '/x', '?a=1', '#f', '%2F'))
          .map(
            ([td, dc, svc, tail]) => `spiffe://${td}.remora/ns/default/dc/${dc}/svc/${svc}${tail}`,
          ),
      ),
      (s) => {
        let id;
        try {
          id = parseSpiffeId(s);
        } catch (err) {
          return err instanceof RemoraError && err.code === 'REMORA_E_IDENTITY_INVALID';
        }
        return formatSpiffeId(id) === s;
      },
    ),
    { numRuns: 2000 },
  );
  t.pass('2000 strings');
});
