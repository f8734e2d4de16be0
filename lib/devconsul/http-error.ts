/**
 * An error the HTTP layer answers with Consul's plain-text body and status code (Consul's
 * `HTTPError{StatusCode, Reason}`). Not a RemoraError: it is the catalog's reply to a client,
 * never something Remora itself reports.
 */
export class HttpError extends Error {
  readonly status: number;
  readonly headers: Record<string, string>;
  constructor(status: number, reason: string, headers: Record<string, string> = {}) {
    super(reason);
    this.status = status;
    this.headers = headers;
  }
}

/** Formats errors the way hashicorp/go-multierror does (Consul's "Validation failed: ..."). */
export function formatMultiError(errors: string[]): string {
  const head = errors.length === 1 ? '1 error occurred:' : `${errors.length} errors occurred:`;
  return `${head}\n${errors.map((e) => `\t* ${e}`).join('\n')}\n\n`;
}
