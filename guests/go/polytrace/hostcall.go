package polytrace

import "runtime/debug"

// CallHost runs f, a call to a host import whose answer carries strings,
// lists or other data the host copies into this instance's memory, with
// Go's garbage collector held off until the call returns, and returns f's
// result.
//
// Why: the host copies such an answer by calling the guest's
// `cabi_realloc` export, and the component model forbids a guest to call
// any import until that copy is done. An allocation in `cabi_realloc` that
// starts or assists a garbage collection makes Go's runtime read the clock
// (`gcMarkTermination` → `time.now` → `wasi:clocks/wall-clock.now`), poll
// (`netpoll` → `poll_oneoff`) or switch to the goroutine that runs
// `runtime.AddCleanup` callbacks, which drop resources — each an import
// call, each trapping the instance with "cannot leave component
// instance". Seen with a few thousand SQL queries in one request. With the
// collector held off for the call, the allocation cannot start one; a
// collection already running is finished first, here, where imports are
// allowed.
//
// Every helper of this SDK that reads data from the host (request and
// response bodies and headers, SQL results, key-value values) goes
// through CallHost; code that calls the generated bindings directly should
// too. Calls nest. Cost: about a microsecond per call.
func CallHost[T any](f func() T) T {
	defer HoldGC()()
	return f()
}

// HoldGC holds the garbage collector off, as [CallHost] does, until the
// function it returns is called: for a run of host calls (reading a body
// chunk by chunk), as in `defer polytrace.HoldGC()()`. Garbage made
// meanwhile is collected afterwards.
func HoldGC() (release func()) {
	previous := debug.SetGCPercent(-1)
	return func() { debug.SetGCPercent(previous) }
}
