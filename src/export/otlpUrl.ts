// Where OTLP/HTTP spans go: checked at startup, apart from the (heavy) exporter itself.
import { NettraceError } from '../errors';

export function otlpTracesUrl(endpoint: string): string {
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw new NettraceError('USAGE', `--otlp-endpoint ${JSON.stringify(endpoint)} is not a URL`, 'give the collector\'s OTLP/HTTP address, e.g. http://127.0.0.1:4318');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new NettraceError('USAGE', `--otlp-endpoint ${endpoint}: only http:// and https:// (OTLP/HTTP) are supported`, 'give the collector\'s OTLP/HTTP address, e.g. http://127.0.0.1:4318');
  }
  return url.pathname.endsWith('/v1/traces') ? url.href : new URL('v1/traces', url.href.endsWith('/') ? url.href : url.href + '/').href;
}
