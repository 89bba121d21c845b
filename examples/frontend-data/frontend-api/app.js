// frontend-api (JavaScript): GET /process/:name → span `process-data-logic`
// (`user.name`), ~50 ms of work, then data-processor's GET /data/:name.
// When data-processor fails, the error is recorded here too and the answer
// is 500.
import { withSpan, serve } from './polytrace.js';

// Exported directly (not a fetch listener) so one instance serves request
// after request.
export const incomingHandler = serve(handle);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function json(status, body) {
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });
}

class DataProcessorError extends Error {
  constructor(status, detail) {
    super(`data-processor answered ${status}: ${detail}`);
    this.name = 'DataProcessorError';
  }
}

async function handle(request) {
  const match = /^\/process\/([^/]+)$/.exec(new URL(request.url).pathname);
  if (request.method !== 'GET' || !match) return json(404, { error: 'GET /process/:name' });
  const name = decodeURIComponent(match[1]);
  try {
    const result = await withSpan('process-data-logic', { 'user.name': name }, async () => {
      await sleep(50); // the frontend's own work
      const response = await fetch(`http://data-processor/data/${encodeURIComponent(name)}`);
      const body = await response.json();
      if (!response.ok) throw new DataProcessorError(response.status, body.error ?? 'no detail');
      return body.result;
    });
    return json(200, { name, result });
  } catch (e) {
    // withSpan recorded it on process-data-logic; the 500 marks the SERVER span.
    return json(500, { name, error: String(e.message) });
  }
}
