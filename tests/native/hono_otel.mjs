// The native twin of a Hono component: the component's own app.js, served on
// Node by @hono/node-server with the official OpenTelemetry SDK set up as a
// Node.js team sets it up for Hono (sdk-node, @hono/otel's SERVER-span
// middleware, the undici instrumentation for fetch). These setup lines are
// what the polytrace component does without; tests/tests/twins.rs runs both
// sides and compares their traces.
//
//   cd tests/native && APP_DIR=examples/hono-sessions OTEL_SERVICE_NAME=session-service \
//     OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 node hono_otel.mjs
//
// APP_DIR is the component's directory (absolute, or relative to the
// repository); its app.js exports the Hono app as default. Serves on PORT
// (default: a free port) and prints `listening on URL` first. Spans and
// metrics go over OTLP/HTTP protobuf to OTEL_EXPORTER_OTLP_ENDPOINT.
//
// SERVICE_HOSTS (`name=127.0.0.1:port,...`) plays the cluster's DNS: the
// app's fetch('http://name/...') reaches the twin of service `name`, as
// polytrace routes it to the component `name`. Nothing in the app changes.
import { register } from 'node:module';
import { resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

// ---- the OpenTelemetry SDK setup: what polytrace supplies instead ----------
import { NodeSDK } from '@opentelemetry/sdk-node';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { OTLPMetricExporter } from '@opentelemetry/exporter-metrics-otlp-proto';
import { PeriodicExportingMetricReader } from '@opentelemetry/sdk-metrics';
import { UndiciInstrumentation } from '@opentelemetry/instrumentation-undici';
import { httpInstrumentationMiddleware } from '@hono/otel';

const interval = Number(process.env.OTEL_METRIC_EXPORT_INTERVAL ?? 60000);
const sdk = new NodeSDK({
  traceExporter: new OTLPTraceExporter(),
  metricReaders: [
    new PeriodicExportingMetricReader({
      exporter: new OTLPMetricExporter(),
      // The reader takes no interval from the environment; the tests set a short one.
      exportIntervalMillis: interval,
      exportTimeoutMillis: Math.min(interval, 30000),
    }),
  ],
  logRecordProcessors: [],
  instrumentations: [new UndiciInstrumentation()],
});
sdk.start();
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.once(signal, () => sdk.shutdown().finally(() => process.exit(0)));
}
// ---------------------------------------------------------------------------

import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import { Agent, buildConnector, setGlobalDispatcher } from 'undici';

const here = fileURLToPath(new URL('.', import.meta.url));

// The app's own imports (hono, @opentelemetry/api) resolve to this
// directory's node_modules, the packages the SDK above registered with.
register(
  'data:text/javascript,' +
    encodeURIComponent(`
      const base = ${JSON.stringify(pathToFileURL(resolve(here, 'hono_otel.mjs')).href)};
      export async function resolve(specifier, context, next) {
        if (/^(\\.|\\/|[a-z]+:)/.test(specifier)) return next(specifier, context);
        return next(specifier, { ...context, parentURL: base });
      }`),
);

const hosts = new Map(
  (process.env.SERVICE_HOSTS ?? '')
    .split(',')
    .filter(Boolean)
    .map((entry) => {
      const [name, address] = entry.split('=');
      const [hostname, port] = address.split(':');
      return [name, { hostname, port }];
    }),
);
const connect = buildConnector({});
setGlobalDispatcher(
  new Agent({
    connect: (options, callback) => {
      const to = hosts.get(options.hostname);
      return connect(to ? { ...options, ...to, host: `${to.hostname}:${to.port}` } : options, callback);
    },
  }),
);

const { default: app } = await import(pathToFileURL(resolve(here, '../..', process.env.APP_DIR, 'app.js')).href);
const traced = new Hono();
traced.use(httpInstrumentationMiddleware());
traced.route('/', app);

serve({ fetch: traced.fetch, hostname: '127.0.0.1', port: Number(process.env.PORT ?? 0) }, (info) => {
  console.log(`listening on http://127.0.0.1:${info.port}`);
});
