import type { ServerResponse } from 'node:http';

export type ErrorCode =
  | 'missing_api_key'
  | 'invalid_api_key'
  | 'duplicate_api_key'
  | 'forbidden'
  | 'bad_request'
  | 'uri_too_long'
  | 'malformed_request'
  | 'headers_too_large'
  | 'request_timeout'
  | 'too_many_requests'
  | 'loop_detected'
  | 'bad_gateway'
  | 'gateway_timeout';

const MESSAGES: Record<ErrorCode, string> = {
  missing_api_key: 'This request needs an API key in the {header} header.',
  invalid_api_key: 'The API key is not valid: it is unknown, deleted, expired or disabled.',
  duplicate_api_key: 'The {header} header was sent more than once; send it exactly once.',
  forbidden: "This API key's group is not allowed to call this route.",
  bad_request: 'The request path cannot be normalised safely.',
  uri_too_long: 'The request path is longer than 8192 characters.',
  malformed_request: 'The request is not valid HTTP/1.1.',
  headers_too_large: 'The request headers are too large.',
  request_timeout: 'The request headers did not arrive in time.',
  too_many_requests: 'Too many failed authentications from this address; retry later.',
  loop_detected: 'The request came back to this proxy: the upstream points at keygate itself.',
  bad_gateway: 'The upstream could not be reached, or closed the connection without an answer.',
  gateway_timeout: 'The upstream did not answer in time.',
};

export function errorMessage(code: ErrorCode, header: string): string {
  return MESSAGES[code].replace('{header}', header);
}

export function sendError(
  res: ServerResponse,
  status: number,
  code: ErrorCode,
  opts: { header: string; message?: string; extra?: Record<string, string> },
): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = JSON.stringify({ error: code, message: opts.message ?? errorMessage(code, opts.header) });
  const headers: Record<string, string | number> = {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    ...opts.extra,
  };
  if (status === 401) headers['www-authenticate'] = `ApiKey realm="keygate", header="${opts.header}"`;
  res.writeHead(status, headers);
  res.end(body);
}
