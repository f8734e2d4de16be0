// The one place that maps a coded error to what the caller sees: status from the catalog,
// `x-remora-error: <code>` and a readable reason (linkerd's ServerRescue / l5d-proxy-error).
import { describeError, toRemoraError, type RemoraError } from '../../lib/errors/index.ts';
import type { ProxyResponse, Stage } from './types.ts';

export const ERROR_HEADER = 'x-remora-error';

const REASONS: Record<number, string> = {
  200: 'OK',
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  408: 'Request Timeout',
  413: 'Content Too Large',
  417: 'Expectation Failed',
  429: 'Too Many Requests',
  431: 'Request Header Fields Too Large',
  500: 'Internal Server Error',
  501: 'Not Implemented',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
  505: 'HTTP Version Not Supported',
};

export function reasonPhrase(status: number): string {
  return REASONS[status] ?? 'Unknown';
}

/** When a coded error says the caller may try again (`details.retryAfterS`), in seconds. */
export function retryAfter(err: RemoraError): string | null {
  const s = err.details.retryAfterS;
  return typeof s === 'number' ? String(s) : null;
}

/** The `www-authenticate` challenge of a 401 (`details.wwwAuthenticate`), or null. */
export function authChallenge(err: RemoraError): string | null {
  const c = err.details.wwwAuthenticate;
  return typeof c === 'string' ? c : null;
}

/** The answer for a coded error (status from the catalog, 502 when the code has none). */
export function errorResponse(err: RemoraError, status?: number): ProxyResponse {
  const s = status ?? describeError(err.code).status ?? 502;
  const body = Buffer.from(`${err.code}: ${err.message}\n`, 'utf8');
  const headers = [ERROR_HEADER, err.code, 'content-type', 'text/plain; charset=utf-8'];
  const after = retryAfter(err);
  if (after !== null) headers.push('retry-after', after);
  const challenge = authChallenge(err);
  if (challenge !== null) headers.push('www-authenticate', challenge);
  return {
    status: s,
    reason: reasonPhrase(s),
    headers,
    body,
    bodyLength: body.length,
    errorCode: err.code,
  };
}

/** Turns any rejection below it into an error response; `onError` sees each (for logs). */
export function createErrorResponderStage(options: {
  onError?: (err: RemoraError) => void;
}): Stage {
  return (next) => async (req) => {
    try {
      return await next(req);
    } catch (e) {
      const err = toRemoraError(e);
      options.onError?.(err);
      if (req.body !== null && !Buffer.isBuffer(req.body) && !req.body.ended) req.body.cancel(err);
      return errorResponse(err);
    }
  };
}
