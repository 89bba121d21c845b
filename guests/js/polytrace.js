// polytrace guest SDK for JavaScript components (componentize-js).
//
// The host supplies the telemetry; this module makes it idiomatic:
//
//   import { withSpan } from './polytrace.js';
//
//   const total = await withSpan('load_session', { 'session.id': id }, async (span) => {
//     span.addEvent('checkpoint', { step: 1 });
//     return await lookup(id); // a throw here is recorded on the span, then rethrown
//   });
//
// Outbound fetch() calls get CLIENT spans and `traceparent` from the host:
// there is nothing to configure. `counter()`, `histogram()`, `upDownCounter()`
// and `gauge()` make metric instruments; `log` has log records, and
// importing this module sends console.* to the host as log records of the
// matching severity (console.log/info INFO, warn WARN, error ERROR, debug
// DEBUG, trace TRACE), correlated with the current span. scripts/build-guest.sh places this file next
// to the component's entry module, so components import it as './polytrace.js'.
import * as tracing from 'polytrace:telemetry/tracing@0.1.0';
import * as spanBatch from 'polytrace:telemetry/span-batch@0.1.0';
import * as wallClock from 'wasi:clocks/wall-clock@0.2.10';
import * as wmetrics from 'polytrace:telemetry/metrics@0.1.0';
import * as wlogs from 'polytrace:telemetry/logs@0.1.0';
import * as wserver from 'polytrace:telemetry/server@0.1.0';
import * as wsql from 'polytrace:telemetry/sql@0.1.0';
import * as kvStore from 'wasi:keyvalue/store@0.2.0-draft';
import * as kvAtomics from 'wasi:keyvalue/atomics@0.2.0-draft';
import * as kvBatch from 'wasi:keyvalue/batch@0.2.0-draft';

const DISPOSE = Symbol.dispose || Symbol.for('dispose');
const KINDS = new Set(['internal', 'server', 'client', 'producer', 'consumer']);

function isInteger(v) {
  return typeof v === 'bigint' || (typeof v === 'number' && Number.isInteger(v));
}

function toS64(v) {
  return typeof v === 'bigint' ? BigInt.asIntN(64, v) : BigInt(v);
}

/** The typed WIT value of a JavaScript value; throws TypeError for others. */
export function value(v) {
  switch (typeof v) {
    case 'string':
      return { tag: 'string', val: v };
    case 'boolean':
      return { tag: 'bool', val: v };
    case 'bigint':
      return { tag: 's64', val: toS64(v) };
    case 'number':
      // JavaScript has one number type: whole numbers are integers, as
      // OpenTelemetry's JavaScript SDK cannot tell them apart either.
      return Number.isInteger(v) && Number.isSafeInteger(v)
        ? { tag: 's64', val: BigInt(v) }
        : { tag: 'f64', val: v };
  }
  if (Array.isArray(v)) {
    if (v.every((i) => typeof i === 'string')) return { tag: 'string-array', val: v };
    if (v.every((i) => typeof i === 'boolean')) return { tag: 'bool-array', val: v };
    if (v.every((i) => isInteger(i) && (typeof i === 'bigint' || Number.isSafeInteger(i)))) {
      return { tag: 's64-array', val: BigInt64Array.from(v, toS64) };
    }
    if (v.every((i) => typeof i === 'number')) return { tag: 'f64-array', val: Float64Array.from(v) };
  }
  throw new TypeError(
    `attribute value ${String(v)} is not a string, boolean, number, bigint or an array of one of those`,
  );
}

/** WIT key-values from a plain object: `{ 'order.items': 3 }`. */
export function attributes(obj) {
  return Object.entries(obj ?? {}).map(([key, v]) => ({ key, value: value(v) }));
}

// ---- spans, recorded in guest memory ---------------------------------------
//
// Span operations are kept in guest memory, each already JSON text (the
// engine's JSON.stringify is native code; writing bytes one at a time in
// interpreted JavaScript costs ~10x more), and handed to the host's
// `span-batch` interface in one call (its JSON form, wit/telemetry.wit):
// when the outermost open span ends (inside serve(), when the request's
// handler is done), before anything that needs the host to know the current
// span (fetch(), console.* and log records, inject(), a span's context), and
// when many are waiting. Attribute values that are not attribute values
// (null, objects, mixed arrays) are left out and counted by the host, as
// OpenTelemetry's JavaScript SDK drops them.

const FLUSH_AT = 512;
// Also sent when this many characters are waiting (a batch must stay far
// below the host's 16 MiB).
const FLUSH_AT_CHARS = 1 << 20;
const BATCH_ENCODER = new TextEncoder();

// Pending operations (JSON texts), open batched spans, and whether serve()
// sends them at the request's end.
let pending = [];
let pendingChars = 0;
let openSpans = 0;
let inRequest = false;
let lastHandle = 0;

// Times are performance.now() milliseconds after an origin in ns since the
// Unix epoch, read from the wall clock once per request.
let origin = '0';
let calibrated = false;
function now() {
  if (!calibrated) {
    flush();
    const wall = wallClock.now();
    const offset = BigInt(Math.round(performance.now() * 1e6));
    origin = String(wall.seconds * 1000000000n + BigInt(wall.nanoseconds) - offset);
    calibrated = true;
  }
  return performance.now();
}

// JSON text of an operation; a bigint (which JSON.stringify refuses) goes
// as {"s64": "<decimal>"}.
function bigints(_key, v) {
  if (typeof v === 'bigint') return { s64: BigInt.asIntN(64, v).toString() };
  return v;
}
function record(op) {
  let text;
  try {
    text = JSON.stringify(op);
  } catch {
    text = JSON.stringify(op, bigints);
  }
  queue(text);
}

// Outside serve() nothing marks the end of a request: what is pending is
// also sent once the current job is done (a span left open must not hold
// back everything recorded after it).
let flushQueued = false;
function flushLater() {
  flushQueued = false;
  flush();
}
function queue(text) {
  pending.push(text);
  pendingChars += text.length;
  if (pending.length >= FLUSH_AT || pendingChars >= FLUSH_AT_CHARS) flush();
  else if (!inRequest && !flushQueued && typeof queueMicrotask === 'function') {
    flushQueued = true;
    queueMicrotask(flushLater);
  }
}

// A \uD800-\uDFFF escape not preceded by an escaped backslash.
const LONE_SURROGATE = /(?<!\\)((?:\\\\)*)\\ud[89a-f][0-9a-f]{2}/g;

/** Hand the span operations recorded so far to the host. */
export function flush() {
  if (pending.length === 0) return;
  let text = `["${origin}",${pending.join(',')}]`;
  pending = [];
  pendingChars = 0;
  // JSON.stringify writes a lone surrogate as a \ud8xx escape, which is
  // not Unicode and which the host's JSON parser refuses: U+FFFD instead.
  if (text.includes('\\ud')) text = text.replace(LONE_SURROGATE, '$1\\ufffd');
  try {
    spanBatch.apply(BATCH_ENCODER.encode(text));
  } catch (e) {
    // A refused batch is this SDK's bug; say so without failing the request.
    const error = e?.payload ?? e;
    try {
      wlogs.emit(13, `polytrace.js: span batch refused: ${error}`, []);
    } catch {}
  }
}

// fetch() is sent by the host under its current span: tell it first.
const originalFetch = globalThis.fetch;
if (typeof originalFetch === 'function') {
  globalThis.fetch = function fetch(...args) {
    flush();
    return originalFetch.apply(this, args);
  };
}

const KIND_CODE = { internal: 0, server: 1, client: 2, producer: 3, consumer: 4 };

/**
 * A span; the current span while open (spans started after it, and fetch()
 * calls, are its children). Operations after end() do nothing.
 */
// The span operations, shared by Span and polytrace-otel.js's API span
// (one implementation; functions rather than a base class, since a
// subclass's super calls cost ~1 µs a span in StarlingMonkey).

/** Record a span's start; its handle. `k`: a KIND_CODE; `parent`: an
 * explicit parent context, or undefined for the host's current span. */
export function _startOp(name, attrs, k, parent) {
  lastHandle = lastHandle >= 0xffffffff ? 1 : lastHandle + 1;
  const handle = lastHandle;
  record(
    parent
      ? [2, handle, k, now(), String(name), attrs ?? {}, String(parent.traceId), String(parent.spanId),
          Number(parent.traceFlags) & 0xff, !!parent.isRemote, String(parent.traceState ?? '')]
      : [1, handle, k, now(), String(name), attrs ?? {}],
  );
  openSpans++;
  return handle;
}

/** Record an operation (an array, see the encoding above) on a span. */
export const _op = record;

/** Record an event on span `handle`. */
export function _eventOp(handle, name, attrs) {
  record([4, handle, now(), String(name), attrs ?? {}]);
}

/** Record a thrown value on span `handle` as an `exception` event. */
export function _exceptionOp(handle, error, setStatus) {
  const [type, message, stack] = exceptionParts(error);
  record([5, handle, now(), String(type), message, stack ?? null, !!setStatus]);
}

/** The host's context of span `handle` (what is pending sent first). */
export function _contextOf(handle) {
  flush();
  return spanBatch.contextOf(handle);
}

/** Whether the host records span `handle`. */
export function _isRecording(handle) {
  flush();
  return spanBatch.isRecording(handle);
}

/** Record the end of span `handle`. */
export function _endOp(handle) {
  queue(`[8,${handle},${now()}]`);
  openSpans--;
  // The outermost span ended: what it recorded goes to the host now,
  // unless serve() sends it with the rest of the request.
  if (openSpans <= 0 && !inRequest) flush();
}

/**
 * A span; the current span while open (spans started after it, and fetch()
 * calls, are its children). Operations after end() do nothing.
 */
export class Span {
  constructor(name, attrs = {}, { kind = 'internal', parent } = {}) {
    // The batch handle; undefined once ended.
    this._h = _startOp(name, attrs, Object.hasOwn(KIND_CODE, kind) ? KIND_CODE[kind] : 0, parent);
  }

  setAttribute(key, v) {
    if (this._h !== undefined) record([3, this._h, { [key]: v }]);
    return this;
  }

  setAttributes(attrs) {
    if (this._h !== undefined) record([3, this._h, attrs ?? {}]);
    return this;
  }

  addEvent(name, attrs = {}) {
    if (this._h !== undefined) _eventOp(this._h, name, attrs);
    return this;
  }

  /** Record a thrown value as an `exception` event with its stack; status Error. */
  recordException(error, { setStatus = true } = {}) {
    if (this._h !== undefined) _exceptionOp(this._h, error, setStatus);
    return this;
  }

  setStatus(code, description = '') {
    if (this._h !== undefined) {
      record([6, this._h, code === 'error' ? 2 : code === 'ok' ? 1 : 0, code === 'error' ? String(description) : '']);
    }
    return this;
  }

  updateName(name) {
    if (this._h !== undefined) record([7, this._h, String(name)]);
    return this;
  }

  /** The span's context; after the end, undefined once the host has
   * forgotten the span (it remembers the last 64 ended in a request). */
  get context() {
    const handle = this._h ?? this._last;
    return handle === undefined ? undefined : _contextOf(handle);
  }

  isRecording() {
    return this._h !== undefined && _isRecording(this._h);
  }

  /** End the span; later calls do nothing. */
  end() {
    const handle = this._h;
    if (handle === undefined) return;
    this._h = undefined;
    this._last = handle; // for `context` after the end
    _endOp(handle);
  }
}

/** Start a span under the current one; end it with `span.end()`. */
export function startSpan(name, attrs = {}, options = {}) {
  return new Span(name, attrs, options);
}

/**
 * Run `fn(span)` in a span that ends when `fn` finishes, whether it is sync
 * or async. A throw (or rejection) is recorded on the span and rethrown.
 */
export function withSpan(name, attrs, fn, options = {}) {
  if (typeof attrs === 'function') {
    return withSpan(name, {}, attrs, options);
  }
  const span = new Span(name, attrs, options);
  let result;
  try {
    result = fn(span);
  } catch (e) {
    span.recordException(e);
    span.end();
    throw e;
  }
  if (result && typeof result.then === 'function') {
    return Promise.resolve(result).then(
      (v) => {
        span.end();
        return v;
      },
      (e) => {
        span.recordException(e);
        span.end();
        throw e;
      },
    );
  }
  span.end();
  return result;
}

/** Wrap a function so every call runs in a span named `name`. */
export function traced(name, fn, attrs = {}) {
  return function (...args) {
    return withSpan(name, attrs, () => fn.apply(this, args));
  };
}

/** The current span's context, or undefined outside any span. */
export function currentSpanContext() {
  flush();
  return tracing.currentSpanContext();
}

// ---- the request's SERVER span ---------------------------------------------

/** Valid attributes of `obj`, leaving out values that are not attribute
 * values (as the OpenTelemetry API drops them). */
function validAttributes(obj) {
  const out = [];
  for (const [key, v] of Object.entries(obj ?? {})) {
    try {
      out.push({ key, value: value(v) });
    } catch {}
  }
  return out;
}

function exceptionParts(error) {
  const isError = error instanceof Error;
  return [
    isError ? error.name || error.constructor?.name || 'Error' : typeof error,
    isError ? String(error.message) : String(error),
    isError && typeof error.stack === 'string' ? error.stack : undefined,
  ];
}

/**
 * The request's SERVER span, which the host makes: what a web framework
 * knows and the host cannot see. serve() reports a Hono app's route by
 * itself; with @opentelemetry/api, the active span in a handler is the
 * SERVER span and its setAttribute / recordException land here.
 */
export const server = Object.freeze({
  /** The route template the framework matched (`/sessions/:id`): the host
   * sets http.route and names the SERVER span `GET /sessions/:id`. Never
   * the request's own path: a route is a low-cardinality name. */
  setRoute(route) {
    if (route) wserver.setRoute(String(route));
  },
  /** Attributes for the SERVER span; the host's own (http.*, url.*, ...)
   * cannot be replaced. Values that are not attribute values are left out. */
  setAttributes(attrs) {
    const list = validAttributes(attrs);
    if (list.length > 0) wserver.setAttributes(list);
  },
  /** Record a thrown value on the SERVER span as an `exception` event. */
  recordException(error) {
    wserver.recordException(...exceptionParts(error));
  },
});

/** W3C headers for the current span, for transports other than fetch(). */
export function inject() {
  flush();
  return Object.fromEntries(tracing.inject());
}

/** A span context from W3C headers (an object or [name, value] pairs). */
export function extract(headers) {
  const pairs = Array.isArray(headers) ? headers : Object.entries(headers);
  return tracing.extract(pairs.map(([k, v]) => [String(k), String(v)]));
}

// ---- metrics ---------------------------------------------------------------

/** The host refused an instrument; `kind` is `invalid-name`, `invalid-unit`,
 * `invalid-boundaries` or `rejected`. */
export class MetricError extends Error {
  constructor(kind, message) {
    super(message);
    this.name = 'MetricError';
    this.kind = kind;
  }
}

// Instruments made in this instance (one request), by kind and name.
const made = new Map();

function instrument(kind, name, make) {
  const key = `${kind}:${String(name).toLowerCase()}`;
  let found = made.get(key);
  if (!found) {
    try {
      found = make();
    } catch (e) {
      const error = e?.payload ?? e;
      if (error && typeof error.tag === 'string') throw new MetricError(error.tag, String(error.val));
      throw e;
    }
    made.set(key, found);
  }
  return found;
}

class Adder {
  #inner;
  constructor(inner) {
    this.#inner = inner;
  }
  /** Add `n`; a counter ignores negative amounts. */
  add(n, attrs) {
    this.#inner.add(Number(n), attributes(attrs));
  }
}

class Recorder {
  #inner;
  constructor(inner) {
    this.#inner = inner;
  }
  record(n, attrs) {
    this.#inner.record(Number(n), attributes(attrs));
  }
}

/** A counter: `counter('orders.created', { unit: '{order}' }).add(1, { status: 'ok' })`. */
export function counter(name, { description = '', unit = '' } = {}) {
  return instrument('counter', name, () =>
    new Adder(wmetrics.createCounter(String(name), description, unit)),
  );
}

export function upDownCounter(name, { description = '', unit = '' } = {}) {
  return instrument('up-down-counter', name, () =>
    new Adder(wmetrics.createUpDownCounter(String(name), description, unit)),
  );
}

/** A histogram; `boundaries` are explicit bucket boundaries. */
export function histogram(name, { description = '', unit = '', boundaries } = {}) {
  const bounds = boundaries ? Float64Array.from(boundaries, Number) : undefined;
  return instrument('histogram', name, () =>
    new Recorder(wmetrics.createHistogram(String(name), description, unit, bounds)),
  );
}

export function gauge(name, { description = '', unit = '' } = {}) {
  return instrument('gauge', name, () =>
    new Recorder(wmetrics.createGauge(String(name), description, unit)),
  );
}

// ---- logs ------------------------------------------------------------------

export const Severity = Object.freeze({ TRACE: 1, DEBUG: 5, INFO: 9, WARN: 13, ERROR: 17, FATAL: 21 });

/** Log records: `log.warn('card declined', { 'payment.method': 'card' })`. */
export const log = Object.freeze({
  emit(severity, body, attrs) {
    flush();
    wlogs.emit(severity, String(body), attributes(attrs));
  },
  enabled(severity) {
    return wlogs.enabled(severity);
  },
  trace: (body, attrs) => log.emit(Severity.TRACE, body, attrs),
  debug: (body, attrs) => log.emit(Severity.DEBUG, body, attrs),
  info: (body, attrs) => log.emit(Severity.INFO, body, attrs),
  warn: (body, attrs) => log.emit(Severity.WARN, body, attrs),
  error: (body, attrs) => log.emit(Severity.ERROR, body, attrs),
});

function format(args) {
  return args
    .map((a) => {
      if (typeof a === 'string') return a;
      if (a instanceof Error) return a.stack ? `${a.name}: ${a.message}\n${a.stack}` : `${a.name}: ${a.message}`;
      if (typeof a === 'object' && a !== null) {
        try {
          return JSON.stringify(a);
        } catch {
          return String(a);
        }
      }
      return String(a);
    })
    .join(' ');
}

// console.* as log records. Outside a request (while the component is
// pre-initialized at build time) the host is not there: print as before.
const CONSOLE = { log: 9, info: 9, debug: 5, trace: 1, warn: 13, error: 17 };
for (const [method, severity] of Object.entries(CONSOLE)) {
  const original = console[method]?.bind(console);
  console[method] = (...args) => {
    try {
      flush();
      if (wlogs.enabled(severity)) wlogs.emit(severity, format(args), []);
    } catch {
      original?.(...args);
    }
  };
}

// ---- serving requests ------------------------------------------------------
//
//   import { serve } from './polytrace.js';
//   export const incomingHandler = serve(async (request) => new Response('hi'));
//
// serve() exports the wasi:http incoming handler directly, taking a Web
// `Request` and giving back a `Response`, like a fetch listener. Unlike
// `addEventListener('fetch', ...)`, a component built this way can serve
// request after request on one instance (StarlingMonkey's fetch event can
// answer only once per instance: StarlingMonkey issue 247), so polytrace
// keeps it warm between requests.
import {
  Fields,
  OutgoingBody,
  OutgoingResponse,
  ResponseOutparam,
} from 'wasi:http/types@0.2.10';

// Headers wasi:http does not let a guest set on a response.
const FORBIDDEN = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade',
  'host', 'http2-settings', 'te', 'trailer',
]);
const CHUNK = 4096;

function methodName(method) {
  return method.tag === 'other' ? method.val : method.tag.toUpperCase();
}

const DECODER = new TextDecoder();
const ENCODER = new TextEncoder();

// The whole body, `length` bytes when the request said how many (reading
// to the end costs an exception per request in the bindings).
function readAll(incoming, length) {
  const body = incoming.consume();
  const stream = body.stream();
  const chunks = [];
  let size = 0;
  while (length === undefined || size < length) {
    let chunk;
    try {
      chunk = stream.blockingRead(65536n);
    } catch (e) {
      if (e?.payload?.tag === 'closed') break;
      stream[DISPOSE]?.();
      body[DISPOSE]?.();
      throw e;
    }
    chunks.push(chunk);
    size += chunk.length;
  }
  // Children before parents: the host refuses to drop a body whose stream lives.
  stream[DISPOSE]?.();
  body[DISPOSE]?.();
  if (chunks.length === 1) return chunks[0];
  const all = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.length;
  }
  return all;
}

/** A Web `Request` from a wasi:http incoming request (its body read whole). */
function toRequest(incoming) {
  const method = methodName(incoming.method());
  const scheme = incoming.scheme();
  const protocol = scheme?.tag === 'HTTPS' ? 'https' : 'http';
  const authority = incoming.authority() ?? 'localhost';
  const url = `${protocol}://${authority}${incoming.pathWithQuery() ?? '/'}`;
  const fields = incoming.headers();
  const headers = new Headers();
  let length;
  let chunked = false;
  for (const [name, value] of fields.entries()) {
    const text = DECODER.decode(value);
    headers.append(name, text);
    if (name === 'content-length') length = Number(text);
    else if (name === 'transfer-encoding') chunked = true;
  }
  fields[DISPOSE]?.();
  const init = { method, headers };
  // No body unless the request announced one.
  if (chunked || length > 0) {
    const body = readAll(incoming, chunked ? undefined : length);
    if (method !== 'GET' && method !== 'HEAD' && body.length > 0) init.body = body;
  }
  incoming[DISPOSE]?.();
  return new Request(url, init);
}

async function writeResponse(response, responseOut, method) {
  const list = [];
  // The body is sent whole: its length is what it is. A HEAD response says
  // the GET response's length and carries no body (RFC 9110 9.3.2), which
  // wasi:http would count as a short body: no Content-Length then.
  response.headers.forEach((value, name) => {
    if (!FORBIDDEN.has(name) && name !== 'content-length') list.push([name, ENCODER.encode(value)]);
  });
  const body = response.body === null || method === 'HEAD' ? null : new Uint8Array(await response.arrayBuffer());
  if (body !== null) list.push(['content-length', ENCODER.encode(String(body.length))]);
  const outgoing = new OutgoingResponse(Fields.fromList(list));
  outgoing.setStatusCode(response.status);
  const outBody = outgoing.body();
  ResponseOutparam.set(responseOut, { tag: 'ok', val: outgoing });
  if (body !== null && body.length > 0) {
    const stream = outBody.write();
    for (let i = 0; i < body.length; i += CHUNK) {
      stream.blockingWriteAndFlush(i === 0 && body.length <= CHUNK ? body : body.subarray(i, i + CHUNK));
    }
    stream[DISPOSE]?.();
  }
  OutgoingBody.finish(outBody, undefined);
}

/**
 * The wasi:http incoming handler for `handler` (a function from a Web
 * `Request` to a `Response` or a promise of one, an object with such a
 * `fetch` method, or a Hono app): export it as
 * `export const incomingHandler = serve(handler)`. An exception the handler
 * throws is logged with its stack and answered with 500, with the exception
 * on the SERVER span. A Hono app's matched route names the SERVER span.
 */
export function serve(handler) {
  if (isHono(handler)) handler = honoHandler(handler);
  else if (typeof handler !== 'function' && typeof handler?.fetch === 'function') {
    const app = handler;
    handler = (request) => app.fetch(request);
  }
  return {
    async handle(incoming, responseOut) {
      let response;
      let method;
      // Spans of this request go to the host when it is done, or earlier
      // when something needs the host to know the current span.
      inRequest = true;
      calibrated = false;
      openSpans = 0;
      pending = [];
      pendingChars = 0;
      try {
        const request = toRequest(incoming);
        method = request.method;
        response = await (requestHook ? requestHook(request, () => handler(request)) : handler(request));
        if (!(response instanceof Response)) {
          throw new TypeError('the handler did not return a Response');
        }
      } catch (e) {
        server.recordException(e);
        // The engine's stack does not repeat the message: log both.
        console.error(`unhandled error: ${e}${e?.stack ? `\n${e.stack}` : ''}`);
        response = new Response('internal server error', { status: 500 });
      } finally {
        inRequest = false;
        // Spans still open reach the host too: it ends them with the request.
        flush();
      }
      await writeResponse(response, responseOut, method);
    },
  };
}

/** A database error, as node-postgres users know it: `code` is the
 * database's own (SQLSTATE for PostgreSQL, SQLite's extended result code),
 * `kind` the host's (`syntax`, `constraint`, `data`, `not-granted`,
 * `unavailable`, `too-large`, `timeout`, `other`). */
export class DatabaseError extends Error {
  constructor(error) {
    super(String(error?.message ?? error));
    this.name = 'DatabaseError';
    this.kind = error?.kind ?? 'other';
    this.code = error?.code || undefined;
  }
}

// A parameter in execute-json's form (see the WIT): integers as numbers
// when exact, every other number a float64, bytes as base64.
function toJson(v) {
  if (v === null || v === undefined) return null;
  if (typeof v === 'boolean' || typeof v === 'string') return v;
  if (typeof v === 'bigint') return BigInt.asIntN(64, v) === v ? { int64: String(v) } : badValue(v);
  if (typeof v === 'number') {
    if (Number.isSafeInteger(v) || (Number.isFinite(v) && !Number.isInteger(v))) return v;
    return { float64: String(v) }; // NaN, ±Infinity, integral past 2^53: still a float
  }
  if (v instanceof Uint8Array) return { blob: toBase64(v) };
  if (v instanceof ArrayBuffer) return { blob: toBase64(new Uint8Array(v)) };
  if (v instanceof Date) return v.toISOString();
  return badValue(v);
}

function badValue(v) {
  throw new DatabaseError({ kind: 'data', message: `a parameter of type ${typeof v} cannot be sent to the database` });
}

function fromJson(v) {
  if (v === null || typeof v !== 'object') return v;
  // As node-postgres: an integer past 2^53 is a string (JSON cannot carry a BigInt).
  if ('int64' in v) return v.int64;
  if ('float64' in v) return Number(v.float64);
  return fromBase64(v.blob);
}

const BASE64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const BASE64_VALUE = new Map([...BASE64].map((c, i) => [c.charCodeAt(0), i]));

function toBase64(bytes) {
  let out = '';
  for (let i = 0; i < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | ((bytes[i + 1] ?? 0) << 8) | (bytes[i + 2] ?? 0);
    out += BASE64[n >> 18] + BASE64[(n >> 12) & 63];
    out += i + 1 < bytes.length ? BASE64[(n >> 6) & 63] : '=';
    out += i + 2 < bytes.length ? BASE64[n & 63] : '=';
  }
  return out;
}

function fromBase64(text) {
  const clean = text.replace(/=+$/, '');
  const out = new Uint8Array(Math.floor((clean.length * 3) / 4));
  let bits = 0;
  let count = 0;
  let at = 0;
  for (let i = 0; i < clean.length; i++) {
    bits = (bits << 6) | BASE64_VALUE.get(clean.charCodeAt(i));
    count += 6;
    if (count >= 8) {
      count -= 8;
      out[at++] = (bits >> count) & 255;
    }
  }
  return out;
}

/**
 * A database the manifest grants this component, as a client in the
 * shape node-postgres users know: `await db.query(text, params)` →
 * `{ rows, rowCount, fields }`, rows as objects by column name. The host
 * runs and traces every statement (a CLIENT span under the current span,
 * with the database conventions). Placeholders: `$1`, `$2`, ... (or `?`).
 * Transactions: `await db.query('BEGIN')` ... `COMMIT` / `ROLLBACK`, as
 * with node-postgres; one a request leaves open is rolled back by the
 * host. Integers come back as numbers (strings past 2^53, as node-postgres
 * gives them), TEXT that is not UTF-8 as a Uint8Array. A failed statement rejects with a
 * `DatabaseError`.
 */
export class Client {
  constructor(name) {
    this.name = String(name);
    this._conn = undefined;
  }

  async query(text, params = []) {
    // The host makes the statement's span under its current span: tell it first.
    flush();
    const statement = typeof text === 'object' && text !== null ? text.text : text;
    const values = (typeof text === 'object' && text !== null ? text.values : params) ?? [];
    let outcome;
    try {
      if (this._conn === undefined) this._conn = wsql.Connection.open(this.name);
      // The JSON form: one byte buffer each way, which the bindings copy at
      // once, where lifting rows of variants costs tens of µs per value.
      const params = ENCODER.encode(JSON.stringify(Array.from(values, toJson)));
      outcome = JSON.parse(DECODER.decode(this._conn.executeJson(String(statement), params)));
    } catch (e) {
      if (e instanceof DatabaseError) throw e;
      throw new DatabaseError(e?.payload ?? e);
    }
    const columns = outcome.columns;
    const rows = outcome.rows.map((row) => {
      const o = {};
      for (let i = 0; i < columns.length; i++) o[columns[i]] = fromJson(row[i]);
      return o;
    });
    return {
      rows,
      rowCount: columns.length > 0 ? rows.length : outcome.rows_affected,
      fields: columns.map((name) => ({ name })),
    };
  }

  /** Close the connection (a transaction still open is rolled back). */
  async end() {
    const conn = this._conn;
    this._conn = undefined;
    conn?.[DISPOSE]?.();
  }
}

/** SQL through the host: `sql.connect('orders')` is a {@link Client}. */
export const sql = {
  connect: (name) => new Client(name),
};

// ---- Key-value stores -------------------------------------------------------

const KV_KINDS = new Set(['unavailable', 'timeout', 'too-large', 'data', 'other']);

/** A failed key-value operation: `kind` is `access-denied`,
 * `no-such-store`, `unavailable`, `timeout`, `too-large`, `data` or `other`. */
export class KeyValueError extends Error {
  constructor(kind, message) {
    super(message);
    this.name = 'KeyValueError';
    this.kind = kind;
  }
}

function kvError(e) {
  const p = e?.payload ?? e;
  if (p?.tag === 'access-denied') return new KeyValueError('access-denied', 'this key-value store is not granted to the component');
  if (p?.tag === 'no-such-store') return new KeyValueError('no-such-store', 'no such key-value store');
  const text = String(p?.val ?? p?.message ?? p);
  const at = text.indexOf(': ');
  if (at > 0 && KV_KINDS.has(text.slice(0, at))) return new KeyValueError(text.slice(0, at), text.slice(at + 2));
  return new KeyValueError('other', text);
}

/** Run one host call of a store: the host's current span first, errors as KeyValueError. */
function kvCall(f) {
  flush();
  try {
    return f();
  } catch (e) {
    throw kvError(e);
  }
}

function kvBytes(value) {
  if (typeof value === 'string') return ENCODER.encode(value);
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  throw new TypeError(`a key-value value is a string or bytes, not ${typeof value}`);
}

/**
 * A key-value store the manifest grants (`keyvalue = { sessions = ... }`),
 * in the shape of node-redis's commands, every method async: `get` gives
 * the value as text (UTF-8) or null, `getBytes` as a Uint8Array; values
 * set may be strings or bytes. The host traces every operation (a CLIENT
 * span `GET sessions` under the current span; keys and values never
 * recorded). Failures reject with a {@link KeyValueError}.
 */
export class KeyValueStore {
  constructor(name) {
    this.name = String(name);
    this._bucket = kvCall(() => kvStore.open(this.name));
  }

  async getBytes(key) {
    return kvCall(() => this._bucket.get(String(key))) ?? null;
  }

  async get(key) {
    const value = await this.getBytes(key);
    return value === null ? null : DECODER.decode(value);
  }

  async set(key, value) {
    kvCall(() => this._bucket.set(String(key), kvBytes(value)));
  }

  async delete(key) {
    kvCall(() => this._bucket.delete(String(key)));
  }

  async exists(key) {
    return kvCall(() => this._bucket.exists(String(key)));
  }

  /** Add `by` (0 or more) to the integer at `key`, atomically: the new value. */
  async increment(key, by = 1) {
    if (!Number.isSafeInteger(by) || by < 0) throw new RangeError('an increment is an integer of 0 or more');
    return Number(kvCall(() => kvAtomics.increment(this._bucket, String(key), BigInt(by))));
  }

  /** The values of `keys` as text, in one operation: `{ key: value or null }`. */
  async getMany(keys) {
    const list = Array.from(keys, String);
    const found = kvCall(() => kvBatch.getMany(this._bucket, list));
    const out = Object.fromEntries(list.map((k) => [k, null]));
    for (const pair of found) if (pair) out[pair[0]] = DECODER.decode(pair[1]);
    return out;
  }

  /** Set every key of `values` (an object or a Map) in one operation. */
  async setMany(values) {
    const entries = values instanceof Map ? [...values] : Object.entries(values);
    kvCall(() => kvBatch.setMany(this._bucket, entries.map(([k, v]) => [String(k), kvBytes(v)])));
  }

  async deleteMany(keys) {
    kvCall(() => kvBatch.deleteMany(this._bucket, Array.from(keys, String)));
  }

  /** Every key, a page at a time (in no promised order). */
  async *keys() {
    let cursor;
    do {
      const page = kvCall(() => this._bucket.listKeys(cursor));
      yield* page.keys;
      cursor = page.cursor;
    } while (cursor !== undefined);
  }

  /** Drop the store's handle now (the host drops it with the instance);
   * the next `keyvalue.open` of the name opens it again. */
  close() {
    if (openStores.get(this.name) === this) openStores.delete(this.name);
    this._bucket?.[DISPOSE]?.();
    this._bucket = undefined;
  }
}

// The stores this instance has open, by name: a warm instance serves many
// requests, and the host allows 16 open stores per instance.
const openStores = new Map();

/** Key-value stores through the host: `keyvalue.open('sessions')` is the
 * {@link KeyValueStore} of that name, opened on first use and kept. */
export const keyvalue = {
  open(name) {
    const key = String(name);
    let store = openStores.get(key);
    if (!store) {
      store = new KeyValueStore(key);
      openStores.set(key, store);
    }
    return store;
  },
};

// A module that must see each request served by serve() (polytrace-otel.js
// makes the SERVER span the active span): hook(request, run) calls run().
let requestHook;
export function onRequest(hook) {
  requestHook = hook;
}

// ---- Hono ------------------------------------------------------------------

/** A Hono app (https://hono.dev): a router with fetch(). */
function isHono(app) {
  return typeof app?.fetch === 'function' && typeof app?.router?.match === 'function' && 'errorHandler' in app;
}

/**
 * A fetch handler serving Hono `app` that tells the host the matched route
 * (`/sessions/:id`) and records an error that Hono's error handler turned
 * into a response on the SERVER span.
 */
function honoHandler(app) {
  let failure;
  const original = app.errorHandler;
  if (typeof original === 'function') {
    app.errorHandler = function onError(err, c) {
      // An HTTPException (a 401 from an auth middleware, a thrown 404) is a
      // response, not a failure.
      if (typeof err?.getResponse !== 'function') failure = err;
      return original.call(this, err, c);
    };
  }
  return async (request) => {
    failure = undefined;
    const response = await app.fetch(request);
    if (failure !== undefined) server.recordException(failure);
    const route = honoRoute(app, request);
    if (route) server.setRoute(route);
    return response;
  };
}

/** The path of the route Hono's router matched for `request`: the first
 * matched handler's, which is the one that answers (middleware, which take
 * `next`, are not routes; a sub-app's handler wrapped in its error handler
 * is judged by the handler it wraps). */
function honoRoute(app, request) {
  try {
    const method = request.method === 'HEAD' ? 'GET' : request.method;
    const path = typeof app.getPath === 'function' ? app.getPath(request) : new URL(request.url).pathname;
    const matched = app.router.match(method, path)?.[0] ?? [];
    for (const entry of matched) {
      const route = entry?.[0]?.[1];
      const handler = route?.handler?.__COMPOSED_HANDLER ?? route?.handler;
      if (typeof handler === 'function' && handler.length < 2) return route.path;
    }
  } catch {}
  return undefined;
}
