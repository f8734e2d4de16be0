import t from 'tap';
import fc from 'fast-check';
import {
  endToEndHeaders,
  findHeadEnd,
  parseRequestHead,
  parseResponseHead,
} from '../../../proxy/http/h1-parse.ts';
import { BodyDecoder } from '../../../proxy/http/body.ts';

const head = (s: string) => Buffer.from(s, 'latin1');

t.test('a well-formed request head parses with its framing', async (t) => {
  const r = parseRequestHead(
    head('POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-A:  v  \r\n\r\n'),
  );
  if ('status' in r) return t.fail(r.message);
  t.equal(r.method, 'POST');
  t.equal(r.target, '/a?b=1');
  t.equal(r.contentLength, 5);
  t.equal(r.chunked, false);
  t.equal(r.keepAlive, true);
  t.same(r.headers, ['Host', 'x', 'Content-Length', '5', 'X-A', 'v']);
  const c = parseRequestHead(
    head(
      'GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close, x-hop\r\nX-Hop: 1\r\n\r\n',
    ),
  );
  if ('status' in c) return t.fail(c.message);
  t.equal(c.chunked, true);
  t.equal(c.keepAlive, false);
  t.same(endToEndHeaders(c.headers, c.connectionTokens), ['Host', 'x']);
  const h10 = parseRequestHead(head('GET / HTTP/1.0\r\n\r\n'));
  t.equal('status' in h10 ? -1 : h10.keepAlive, false);
});

const refused: Array<[string, string, number, string]> = [
  [
    'two Content-Length headers',
    'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n',
    400,
    'duplicate_content_length',
  ],
  [
    'a Content-Length list',
    'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\n',
    400,
    'bad_content_length',
  ],
  [
    'a signed Content-Length',
    'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n',
    400,
    'bad_content_length',
  ],
  [
    'Content-Length with Transfer-Encoding',
    'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n',
    400,
    'content_length_with_te',
  ],
  [
    'a Transfer-Encoding other than chunked',
    'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n',
    501,
    'bad_transfer_encoding',
  ],
  [
    'an obfuscated Transfer-Encoding',
    'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n',
    501,
    'bad_transfer_encoding',
  ],
  [
    'two Transfer-Encoding headers',
    'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n',
    400,
    'duplicate_transfer_encoding',
  ],
  [
    'Transfer-Encoding in HTTP/1.0',
    'POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n',
    400,
    'te_http10',
  ],
  [
    'whitespace before the colon',
    'GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n',
    400,
    'bad_header_name',
  ],
  ['obs-fold', 'GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  continued\r\n\r\n', 400, 'obs_fold'],
  ['a bare LF line ending', 'GET / HTTP/1.1\nHost: x\r\n\r\n', 400, 'bare_line_ending'],
  [
    'a NUL in a value',
    'GET / HTTP/1.1\r\nHost: x\r\nX-A: a\u0000b\r\n\r\n',
    400,
    'bad_header_value',
  ],
  ['a missing Host', 'GET / HTTP/1.1\r\nX-A: 1\r\n\r\n', 400, 'missing_host'],
  ['two Host headers', 'GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n', 400, 'duplicate_host'],
  ['a space in the target', 'GET /a b HTTP/1.1\r\nHost: x\r\n\r\n', 400, 'bad_target'],
  ['HTTP/2.0 on a 1.1 connection', 'GET / HTTP/2.0\r\nHost: x\r\n\r\n', 505, 'bad_version'],
  ['a lower-case version', 'GET / http/1.1\r\nHost: x\r\n\r\n', 400, 'bad_request_line'],
  ['an unknown Expect', 'GET / HTTP/1.1\r\nHost: x\r\nExpect: magic\r\n\r\n', 417, 'bad_expect'],
  ['a header without a colon', 'GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n', 400, 'bad_header'],
];

for (const [what, raw, status, reason] of refused) {
  t.test(`a request with ${what} is refused with ${status}`, async (t) => {
    const r = parseRequestHead(head(raw));
    t.ok('status' in r, 'refused');
    if ('status' in r) {
      t.equal(r.status, status);
      t.equal(r.reason, reason);
    }
  });
}

t.test('too many or too large headers are refused with 431', async (t) => {
  const many = `GET / HTTP/1.1\r\nHost: x\r\n${'X-A: 1\r\n'.repeat(10)}\r\n`;
  const r = parseRequestHead(head(many), { maxHeadBytes: 1 << 20, maxHeaderCount: 5 });
  t.equal('status' in r && r.status, 431);
  const big = parseRequestHead(head(`GET / HTTP/1.1\r\nHost: x\r\nX: ${'a'.repeat(100)}\r\n\r\n`), {
    maxHeadBytes: 50,
    maxHeaderCount: 5,
  });
  t.equal('status' in big && big.status, 431);
});

t.test('response heads are parsed strictly too', async (t) => {
  const ok = parseResponseHead(head('HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n'));
  t.equal('headers' in ok && ok.status, 200);
  const bad = parseResponseHead(
    head('HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n'),
  );
  t.equal('headers' in bad ? 0 : bad.status, 502);
  const garbage = parseResponseHead(head('HTTP/1.1 2000 OK\r\n\r\n'));
  t.notOk('headers' in garbage);
});

function decodeChunked(
  wire: string,
  step: number,
): { body: string; trailers: string[] | null } | string {
  const d = new BodyDecoder('chunked', 0, 'request');
  const buf = Buffer.from(wire, 'latin1');
  let body = '';
  let trailers: string[] | null = null;
  let ended = false;
  for (let i = 0; i < buf.length; i += step) {
    const piece = buf.subarray(i, Math.min(buf.length, i + step));
    const n = d.feed(piece, 0, {
      data: (c) => (body += c.toString('latin1')),
      end: (t) => ((trailers = t), (ended = true)),
    });
    if (typeof n !== 'number') return n.reason;
  }
  return ended ? { body, trailers } : 'incomplete';
}

t.test('chunked bodies decode with extensions and trailers at any chunk boundary', async (t) => {
  const wire = '5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n';
  for (const step of [1, 2, 3, 7, 100]) {
    t.same(
      decodeChunked(wire, step),
      { body: 'hello world', trailers: ['X-Sum', '42'] },
      `step ${step}`,
    );
  }
});

t.test('malformed chunked bodies are refused', async (t) => {
  t.equal(decodeChunked('5\r\nhelloX\r\n0\r\n\r\n', 100), 'bad_chunk');
  t.equal(decodeChunked('-5\r\nhello\r\n0\r\n\r\n', 100), 'bad_chunk_size');
  t.equal(decodeChunked('fffffffffffffffff\r\n', 100), 'bad_chunk_size');
  t.equal(decodeChunked('5\nhello\r\n0\r\n\r\n', 100), 'bad_chunk');
  t.equal(decodeChunked('0\r\nBad Trailer: 1\r\n\r\n', 100), 'bad_header_name');
});

t.test('random bytes never crash the parser and never parse as an ambiguous request', async () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
      const b = Buffer.concat([Buffer.from(bytes), Buffer.from('\r\n\r\n')]);
      const end = findHeadEnd(b);
      const r = parseRequestHead(b.subarray(0, end));
      if (!('status' in r)) return !(r.chunked && r.contentLength >= 0);
      return r.status >= 400;
    }),
    { numRuns: 2000 },
  );
  fc.assert(
    fc.property(
      fc.string({ maxLength: 40 }).filter((n) => !n.includes(':')),
      fc.string({ maxLength: 40 }),
      (name, value) => {
        const r = parseRequestHead(head(`GET / HTTP/1.1\r\nHost: x\r\n${name}: ${value}\r\n\r\n`));
        return (
          'status' in r ||
          // eslint-disable-next-line no-control-regex -- the property is about control characters
          (/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(name) && !/[\0-\x08\x0a-\x1f\x7f]/.test(value))
        );
      },
    ),
    { numRuns: 2000 },
  );
});
