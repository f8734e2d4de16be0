/** One entry of the error catalog: what the code means and what a person should do about it. */
export interface ErrorSpec {
  /** What happened, in one sentence. */
  readonly meaning: string;
  /** The way out: what the operator or caller should do. */
  readonly remedy: string;
  /** HTTP status the data plane answers with, when the error ends a request. */
  readonly status?: number;
}
