// The OpenTelemetry API (@opentelemetry/api), backed by the host.
//
// Code written against the API runs unchanged; polytrace is its SDK:
//
//   import { trace, metrics } from '@opentelemetry/api';
//   const tracer = trace.getTracer('session-service');
//   await tracer.startActiveSpan('load_session', async (span) => {
//     span.setAttribute('session.id', id);
//     ...
//     span.end();
//   });
//
// scripts/build-guest.sh bundles this module (with esbuild) into a
// component whose code imports @opentelemetry/api; importing it registers
// the global tracer provider, meter provider, context manager and W3C
// propagator. Spans are polytrace.js spans (the host's), so they nest,
// export and obey the limits exactly as withSpan's do.
//
// What differs from the API's own SDK, all as its no-op implementation does:
//  - links are dropped, and explicit start and end times are ignored (the
//    host stamps spans);
//  - a span is the host's current span (for fetch() and console records)
//    from its start to its end, whatever context it was started in;
//    children still nest by the API's context;
//  - StarlingMonkey has no AsyncLocalStorage: context.with() keeps its
//    context active until the promise the callback returns settles. That
//    is exact for code that awaits one thing at a time; spans started
//    concurrently (Promise.all over startActiveSpan) may take each other's
//    context as parent;
//  - observable instruments (callbacks) are no-ops: the host never calls
//    into an instance between requests;
//  - the instrumentation scope (getTracer(name)) is the component's.
import {
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  context as contextApi,
  createNoopMeter,
  createTraceState,
  metrics as metricsApi,
  propagation as propagationApi,
  trace as traceApi,
} from '@opentelemetry/api';
import * as polytrace from './polytrace.js';
// The span operations, bound directly (a span's start and end run them).
import { _contextOf, _endOp, _eventOp, _exceptionOp, _isRecording, _op, _startOp } from './polytrace.js';

// Spans this module started and has not ended, oldest first: the host makes
// the innermost of them current, so a span whose parent is that one (or,
// with none open, the SERVER span) needs no explicit parent.
const open = [];
// The context a request's handler starts in (its SERVER span's).
let requestContext;

function fromHost(cx) {
  if (!cx) return { traceId: '00000000000000000000000000000000', spanId: '0000000000000000', traceFlags: 0 };
  return {
    traceId: cx.traceId,
    spanId: cx.spanId,
    traceFlags: cx.traceFlags,
    traceState: cx.traceState ? createTraceState(cx.traceState) : undefined,
    isRemote: cx.isRemote,
  };
}

function toHost(sc) {
  return {
    traceId: sc.traceId,
    spanId: sc.spanId,
    traceFlags: sc.traceFlags,
    traceState: sc.traceState ? sc.traceState.serialize() : '',
    isRemote: !!sc.isRemote,
  };
}

const KIND_CODES = {
  [SpanKind.INTERNAL]: 0,
  [SpanKind.SERVER]: 1,
  [SpanKind.CLIENT]: 2,
  [SpanKind.PRODUCER]: 3,
  [SpanKind.CONSUMER]: 4,
};

/** A span made through the API: recorded by polytrace.js's span operations
 * exactly as its `Span` records one, with the API's interface. */
class ApiSpan {
  constructor(name, attrs, kind, parent) {
    this._h = _startOp(name, attrs, kind, parent); // undefined once ended
    this._last = undefined;
    this._context = undefined;
    open.push(this);
  }

  _hostContext() {
    // Asked for once; after the end the host still knows recent spans.
    if (this._context === undefined) {
      const handle = this._h ?? this._last;
      this._context = handle === undefined ? undefined : _contextOf(handle);
    }
    return this._context;
  }

  spanContext() {
    return fromHost(this._hostContext());
  }

  setAttribute(key, value) {
    if (this._h !== undefined && value !== undefined && value !== null) _op([3, this._h, { [key]: value }]);
    return this;
  }

  setAttributes(attributes) {
    if (this._h !== undefined) _op([3, this._h, attributes ?? {}]);
    return this;
  }

  addEvent(name, attributesOrTime) {
    if (this._h === undefined) return this;
    const attrs = attributesOrTime && typeof attributesOrTime === 'object' && !Array.isArray(attributesOrTime)
      && !(attributesOrTime instanceof Date) ? attributesOrTime : {};
    _eventOp(this._h, name, attrs);
    return this;
  }

  addLink() {
    return this;
  }

  addLinks() {
    return this;
  }

  setStatus(status) {
    if (this._h === undefined) return this;
    if (status?.code === SpanStatusCode.ERROR) _op([6, this._h, 2, String(status.message ?? '')]);
    else if (status?.code === SpanStatusCode.OK) _op([6, this._h, 1, '']);
    return this;
  }

  updateName(name) {
    if (this._h !== undefined) _op([7, this._h, String(name)]);
    return this;
  }

  isRecording() {
    return this._h !== undefined && _isRecording(this._h);
  }

  recordException(exception) {
    // The API's users set the status themselves (setStatus).
    if (this._h !== undefined) _exceptionOp(this._h, exception, false);
  }

  end() {
    const handle = this._h;
    if (handle === undefined) return;
    this._h = undefined;
    this._last = handle;
    // Spans mostly end innermost first.
    if (open[open.length - 1] === this) open.pop();
    else {
      const i = open.lastIndexOf(this);
      if (i >= 0) open.splice(i, 1);
    }
    _endOp(handle);
  }
}

/** The request's SERVER span, which the host makes and ends: attributes
 * and exceptions go to it; its name and status are the host's. */
class ServerSpan {
  constructor(cx) {
    this._sc = fromHost(cx);
  }
  spanContext() {
    return this._sc;
  }
  setAttribute(key, value) {
    return this.setAttributes({ [key]: value });
  }
  setAttributes(attributes) {
    polytrace.server.setAttributes(attributes);
    return this;
  }
  addEvent() {
    return this;
  }
  addLink() {
    return this;
  }
  addLinks() {
    return this;
  }
  setStatus() {
    return this;
  }
  updateName() {
    return this;
  }
  end() {}
  isRecording() {
    return (this._sc.traceFlags & 1) === 1;
  }
  recordException(exception) {
    polytrace.server.recordException(exception);
  }
}

function hostCurrentIs(parent) {
  if (parent instanceof ApiSpan) return open.length > 0 && open[open.length - 1] === parent;
  if (parent instanceof ServerSpan) return open.length === 0;
  // No span in the context: a handler without the bridge, whose spans nest
  // under the host's current span as withSpan's do.
  return parent === undefined || !traceApi.isSpanContextValid(parent.spanContext());
}

class Tracer {
  startSpan(name, options, ctx) {
    // The manager is the global one (the API refuses a second), asked
    // directly: this runs for every span.
    const active = ctx ?? manager.active();
    const kind = options?.kind === undefined ? 0 : KIND_CODES[options.kind] ?? 0;
    const attrs = options?.attributes ?? {};
    // The request's own context with no API span open: the parent is the
    // SERVER span, the host's current span (the common case, told without
    // reading the context).
    if (active === requestContext && open.length === 0) return new ApiSpan(name, attrs, kind, undefined);
    const parent = traceApi.getSpan(active);
    if (hostCurrentIs(parent)) return new ApiSpan(name, attrs, kind, undefined);
    const cx = parent instanceof ApiSpan ? parent._hostContext() : toHost(parent.spanContext());
    return new ApiSpan(name, attrs, kind, cx);
  }

  startActiveSpan(name, ...args) {
    const fn = args.pop();
    const [options = {}, ctx = contextApi.active()] = args;
    const span = this.startSpan(name, options, ctx);
    return contextApi.with(traceApi.setSpan(ctx, span), fn, undefined, span);
  }
}

const TRACER = new Tracer();

class TracerProvider {
  getTracer() {
    return TRACER;
  }
}

/** A context manager without AsyncLocalStorage (see the notes above):
 * frames are pushed by with(); an async callback's frame stays until its
 * promise settles, and is then removed wherever it is in the stack. */
class ContextManager {
  constructor() {
    this._frames = [];
  }
  active() {
    const top = this._frames[this._frames.length - 1];
    return top ? top.context : ROOT_CONTEXT;
  }
  with(ctx, fn, thisArg, ...args) {
    const frame = { context: ctx ?? ROOT_CONTEXT };
    this._frames.push(frame);
    let result;
    try {
      result = fn.call(thisArg, ...args);
    } catch (e) {
      this._remove(frame);
      throw e;
    }
    if (result && typeof result.then === 'function') {
      return Promise.resolve(result).finally(() => this._remove(frame));
    }
    this._remove(frame);
    return result;
  }
  bind(ctx, target) {
    if (typeof target !== 'function') return target;
    const manager = this;
    return function bound(...args) {
      return manager.with(ctx, () => target.apply(this, args));
    };
  }
  enable() {
    return this;
  }
  disable() {
    this._frames = [];
    return this;
  }
  /** Start a request: only the SERVER span's context is active. */
  reset() {
    this._frames = [];
  }
  _remove(frame) {
    const i = this._frames.lastIndexOf(frame);
    if (i >= 0) this._frames.splice(i, 1);
  }
}

/** W3C Trace Context and Baggage: traceparent and tracestate of the span
 * in the context; baggage of the context. Parsing is the host's. */
class Propagator {
  inject(ctx, carrier, setter) {
    const span = traceApi.getSpan(ctx);
    const sc = span?.spanContext();
    if (sc && traceApi.isSpanContextValid(sc)) {
      const flags = (sc.traceFlags & 0xff).toString(16).padStart(2, '0');
      setter.set(carrier, 'traceparent', `00-${sc.traceId}-${sc.spanId}-${flags}`);
      const state = sc.traceState?.serialize();
      if (state) setter.set(carrier, 'tracestate', state);
    }
    const baggage = propagationApi.getBaggage(ctx);
    if (baggage) {
      const entries = baggage.getAllEntries().map(([k, e]) => `${encodeURIComponent(k)}=${encodeURIComponent(e.value)}`);
      if (entries.length > 0) setter.set(carrier, 'baggage', entries.join(','));
    }
  }
  extract(ctx, carrier, getter) {
    const header = (name) => {
      const v = getter.get(carrier, name);
      return Array.isArray(v) ? v.join(',') : v;
    };
    const headers = {};
    for (const name of ['traceparent', 'tracestate']) {
      const v = header(name);
      if (v) headers[name] = v;
    }
    const cx = headers.traceparent ? polytrace.extract(headers) : undefined;
    if (cx) ctx = traceApi.setSpanContext(ctx, { ...fromHost(cx), isRemote: true });
    const baggage = header('baggage');
    if (baggage) {
      const entries = {};
      for (const item of baggage.split(',')) {
        const [kv] = item.split(';');
        const eq = kv.indexOf('=');
        if (eq > 0) {
          try {
            entries[decodeURIComponent(kv.slice(0, eq).trim())] = { value: decodeURIComponent(kv.slice(eq + 1).trim()) };
          } catch {}
        }
      }
      ctx = propagationApi.setBaggage(ctx, propagationApi.createBaggage(entries));
    }
    return ctx;
  }
  fields() {
    return ['traceparent', 'tracestate', 'baggage'];
  }
}

// Metrics: instruments made at their first measurement (modules run while
// the component is built, outside any request); observable ones are no-ops.
const NOOP_METER = createNoopMeter();

class Instrument {
  constructor(make, name, options) {
    this._make = make;
    this._name = name;
    this._options = options ?? {};
    this._inner = undefined;
  }
  _measure(value, attributes) {
    if (this._inner === undefined) {
      try {
        this._inner = this._make(this._name, {
          description: this._options.description ?? '',
          unit: this._options.unit ?? '',
          boundaries: this._options.advice?.explicitBucketBoundaries,
        });
      } catch (e) {
        console.warn(`instrument ${this._name} not created: ${e?.message ?? e}`);
        this._inner = null;
      }
    }
    if (this._inner === null) return;
    const method = this._inner.add ?? this._inner.record;
    method.call(this._inner, value, attributes ?? {});
  }
  add(value, attributes) {
    this._measure(value, attributes);
  }
  record(value, attributes) {
    this._measure(value, attributes);
  }
}

class Meter {
  createCounter(name, options) {
    return new Instrument(polytrace.counter, name, options);
  }
  createUpDownCounter(name, options) {
    return new Instrument(polytrace.upDownCounter, name, options);
  }
  createHistogram(name, options) {
    return new Instrument(polytrace.histogram, name, options);
  }
  createGauge(name, options) {
    return new Instrument(polytrace.gauge, name, options);
  }
  createObservableCounter(...a) {
    return NOOP_METER.createObservableCounter(...a);
  }
  createObservableUpDownCounter(...a) {
    return NOOP_METER.createObservableUpDownCounter(...a);
  }
  createObservableGauge(...a) {
    return NOOP_METER.createObservableGauge(...a);
  }
  addBatchObservableCallback() {}
  removeBatchObservableCallback() {}
}

const METER = new Meter();

class MeterProvider {
  getMeter() {
    return METER;
  }
}

const manager = new ContextManager();
traceApi.setGlobalTracerProvider(new TracerProvider());
contextApi.setGlobalContextManager(manager);
propagationApi.setGlobalPropagator(new Propagator());
metricsApi.setGlobalMeterProvider(new MeterProvider());

// Each request served by polytrace.js's serve(): the SERVER span (with the
// request's baggage) is the active span while the handler runs.
polytrace.onRequest((request, run) => {
  manager.reset();
  open.length = 0;
  const headers = {};
  for (const name of ['baggage']) {
    const v = request.headers.get(name);
    if (v) headers[name] = v;
  }
  let ctx = propagationApi.extract(ROOT_CONTEXT, headers);
  ctx = traceApi.setSpan(ctx, new ServerSpan(polytrace.currentSpanContext()));
  requestContext = ctx;
  return contextApi.with(ctx, run);
});
