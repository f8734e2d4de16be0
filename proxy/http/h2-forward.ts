// HTTP/2 (and gRPC) forwarding between node:http2 streams: headers, body streaming both ways
// with backpressure (pipe), and trailers relayed end to end.
import http2, {
  type ClientHttp2Session,
  type IncomingHttpHeaders,
  type OutgoingHttpHeaders,
  type ServerHttp2Stream,
} from 'node:http2';
import type { RemoraError } from '../../lib/errors/index.ts';
import { describeError } from '../../lib/errors/index.ts';
import { ERROR_HEADER } from '../stages/responder.ts';

const HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'http2-settings',
  'host',
]);

function copyHeaders(h: IncomingHttpHeaders, drop: Set<string>): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(h)) {
    if (v === undefined || drop.has(k)) continue;
    out[k] = v;
  }
  return out;
}

/** Answers a stream with a coded error (gRPC callers also get grpc-status 14/7 and a message). */
export function respondH2Error(stream: ServerHttp2Stream, err: RemoraError, grpc: boolean): void {
  if (stream.destroyed || stream.closed) return;
  const status = describeError(err.code).status ?? 502;
  const msg = `${err.code}: ${err.message}`;
  if (stream.headersSent) {
    stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
    return;
  }
  if (grpc) {
    stream.respond(
      {
        ':status': 200,
        'content-type': 'application/grpc',
        'grpc-status': status === 403 ? '7' : '14',
        'grpc-message': encodeURIComponent(msg),
        [ERROR_HEADER]: err.code,
      },
      { endStream: true },
    );
    return;
  }
  stream.respond({
    ':status': status,
    'content-type': 'text/plain; charset=utf-8',
    [ERROR_HEADER]: err.code,
  });
  stream.end(`${msg}\n`);
}

/**
 * Sends `headers` + the body of `stream` to `session` and relays the answer back. `extra`
 * headers are added to the upstream request. Resolves with the upstream status when the
 * response head arrived; rejects when the upstream stream failed before that.
 */
export function forwardH2Stream(
  stream: ServerHttp2Stream,
  headers: IncomingHttpHeaders,
  session: ClientHttp2Session,
  extra: OutgoingHttpHeaders = {},
): Promise<number> {
  return new Promise((resolve, reject) => {
    const reqHeaders = { ...copyHeaders(headers, HOP), ...extra };
    const up = session.request(reqHeaders);
    let responded = false;
    stream.pipe(up);
    stream.on('close', () => {
      if (!up.closed) up.close(http2.constants.NGHTTP2_CANCEL);
    });
    up.on('response', (h) => {
      responded = true;
      const status = Number(h[':status'] ?? 502);
      let trailers: OutgoingHttpHeaders | null = null;
      up.on('trailers', (t: IncomingHttpHeaders) => {
        trailers = copyHeaders(t, HOP);
      });
      if (stream.destroyed || stream.closed) {
        up.close(http2.constants.NGHTTP2_CANCEL);
        resolve(status);
        return;
      }
      stream.respond(copyHeaders(h, HOP), { waitForTrailers: true });
      stream.on('wantTrailers', () => {
        if (trailers !== null && Object.keys(trailers).length > 0) stream.sendTrailers(trailers);
        else stream.close();
      });
      up.pipe(stream);
      resolve(status);
    });
    up.on('error', (err) => {
      if (!responded) reject(err instanceof Error ? err : new Error(String(err)));
      else if (!stream.destroyed) stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
    });
    up.on('close', () => {
      if (!responded) reject(new Error(`upstream stream closed with code ${up.rstCode}`));
      else if (
        !stream.destroyed &&
        !stream.writableEnded &&
        up.rstCode !== http2.constants.NGHTTP2_NO_ERROR
      )
        stream.close(up.rstCode);
    });
  });
}
