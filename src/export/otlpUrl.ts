// Where OTLP/HTTP spans go: checked at startup, apart from the (heavy) exporter itself.
import { NettraceError } from '../errors';

/** The traces URL of an OTLP/HTTP endpoint: /v1/traces appended unless it is there. source names where it came from. */
export function otlpTracesUrl(endpoint: string, source = '--otlp-endpoint'): string {
  const next = source.startsWith('--')
    ? 'give the collector\'s OTLP/HTTP address, e.g. http://127.0.0.1:4318'
    : `set ${source} to the collector's OTLP/HTTP address, e.g. http://127.0.0.1:4318, or give --otlp-endpoint`;
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw new NettraceError('USAGE', `${source} ${JSON.stringify(endpoint)} is not a URL`, next);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new NettraceError('USAGE', `${source} ${endpoint}: only http:// and https:// (OTLP/HTTP) are supported`, next);
  }
  return url.pathname.endsWith('/v1/traces') ? url.href : new URL('v1/traces', url.href.endsWith('/') ? url.href : url.href + '/').href;
}

/**
 * The collector spans go to: --otlp-endpoint, else the environment OpenTelemetry's SDKs read
 * (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, then OTEL_EXPORTER_OTLP_ENDPOINT), else none. Checked here,
 * so a bad value stops the agent at startup with the variable's name.
 */
export function otlpEndpoint(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string | null {
  if (flag !== undefined) {
    otlpTracesUrl(flag);
    return flag;
  }
  for (const name of ['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', 'OTEL_EXPORTER_OTLP_ENDPOINT']) {
    const v = env[name]?.trim();
    if (v) {
      otlpTracesUrl(v, name);
      return v;
    }
  }
  return null;
}
