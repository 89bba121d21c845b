// frontend-api, written as a JavaScript team writes it: a Hono app with the
// OpenTelemetry API. GET /process/:name → a `process-data-logic` span
// (`user.name`), ~50 ms of the frontend's own work, then data-processor's
// GET /data/:name. When data-processor fails, the error is recorded on
// `process-data-logic` too and the answer is 500.
//
// Nothing in it is polytrace's: the build bundles it with its npm packages,
// polytrace serves `export default app`, supplies the SDK and routes
// http://data-processor to the component of that name (natively, the
// cluster's DNS does; tests/native/hono_otel.mjs is its twin's setup).
import { Hono } from 'hono';
import { SpanStatusCode, trace } from '@opentelemetry/api';

const tracer = trace.getTracer('frontend-api');
const DATA_PROCESSOR = 'http://data-processor';

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class DataProcessorError extends Error {
  constructor(status, detail) {
    super(`data-processor answered ${status}: ${detail}`);
    this.name = 'DataProcessorError';
  }
}

const app = new Hono();

app.get('/process/:name', async (c) => {
  const name = c.req.param('name');
  try {
    const result = await tracer.startActiveSpan(
      'process-data-logic',
      { attributes: { 'user.name': name } },
      async (span) => {
        try {
          await sleep(50); // the frontend's own work
          const response = await fetch(`${DATA_PROCESSOR}/data/${encodeURIComponent(name)}`);
          const body = await response.json();
          if (!response.ok) throw new DataProcessorError(response.status, body.error ?? 'no detail');
          return body.result;
        } catch (e) {
          span.recordException(e);
          span.setStatus({ code: SpanStatusCode.ERROR, message: e.message });
          throw e;
        } finally {
          span.end();
        }
      },
    );
    return c.json({ name, result });
  } catch (e) {
    return c.json({ name, error: String(e.message) }, 500);
  }
});

export default app;
