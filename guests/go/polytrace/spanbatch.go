package polytrace

import "unsafe"

// span-batch's `apply` (wit/telemetry.wit), declared here instead of
// through the generated binding, which it is called more than any other:
// twice per span. The binding allocates a runtime.Pinner and a return
// area on the heap for every call and pins the buffer (about a quarter of
// a span's cost in a profile of the span-cost loop: setPinned, sweeping
// the pinned object's span, the allocations). Nothing needs pinning here:
// Go's collector does not move objects, the buffer stays reachable from
// `batch` for the whole call, and the return area is a package variable.
//
//go:wasmimport polytrace:telemetry/span-batch@0.1.0 apply
func wasmImportApply(ops uintptr, length uint32, result uintptr)

// applyResult is apply's return area as the canonical ABI lays out
// `result<_, string>`: the case (0 ok, 1 error), then the error string's
// address and length in this instance's memory.
var applyResult [3]uint32

// applyOps hands `ops` to the host; it returns the host's error, if any.
func applyOps(ops []byte) (string, bool) {
	applyResult = [3]uint32{}
	wasmImportApply(uintptr(unsafe.Pointer(unsafe.SliceData(ops))), uint32(len(ops)),
		uintptr(unsafe.Pointer(&applyResult)))
	if applyResult[0] == 0 {
		return "", false
	}
	// The host wrote the message into memory from cabi_realloc; copy it out.
	message := unsafe.String((*byte)(unsafe.Pointer(uintptr(applyResult[1]))), applyResult[2])
	return string([]byte(message)), true
}
