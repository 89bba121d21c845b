// Package keyvalue is the key-value stores the host supplies
// (wasi:keyvalue), for Go guests. A store is one the manifest grants the
// component (keyvalue = { sessions = "sqlite:sessions.db" } or a redis://
// URL), opened by that name:
//
//	sessions, err := keyvalue.Open("sessions")
//	err = sessions.Set("s-1", []byte(`{"user":"u-1"}`))
//	value, found, err := sessions.Get("s-1")
//	ok, err := sessions.Exists("s-1")
//	visits, err := sessions.Increment("visits", 1)
//	err = sessions.Delete("s-1")
//	values, err := sessions.GetMany([]string{"a", "b"}) // map: missing keys absent
//	err = sessions.SetMany(map[string][]byte{"a": []byte("1")})
//	err = sessions.DeleteMany([]string{"a"})
//	keys, err := sessions.Keys()
//
// The host traces every operation (a CLIENT span under the current span,
// "GET sessions", with the database conventions; keys and values are
// never recorded). Failures are *Error values with their Kind.
package keyvalue

import (
	"strings"

	"wit_component/polytrace"
	witatomics "wit_component/wasi_keyvalue_atomics"
	witbatch "wit_component/wasi_keyvalue_batch"
	witstore "wit_component/wasi_keyvalue_store"

	witTypes "go.bytecodealliance.org/pkg/wit/types"
)

// Error is a failed key-value operation. Kind is access-denied,
// no-such-store, unavailable, timeout, too-large, data or other.
type Error struct {
	Kind, Message string
}

func (e *Error) Error() string { return e.Message }

var kinds = map[string]bool{"unavailable": true, "timeout": true, "too-large": true, "data": true, "other": true}

func toError(e witstore.Error) error {
	switch e.Tag() {
	case witstore.Error_AccessDenied:
		return &Error{Kind: "access-denied", Message: "this key-value store is not granted to the component"}
	case witstore.Error_NoSuchStore:
		return &Error{Kind: "no-such-store", Message: "no such key-value store"}
	}
	text := e.Other()
	if kind, message, ok := strings.Cut(text, ": "); ok && kinds[kind] {
		return &Error{Kind: kind, Message: message}
	}
	return &Error{Kind: "other", Message: text}
}

// Store is a granted key-value store (a wasi:keyvalue bucket).
type Store struct {
	bucket *witstore.Bucket
	// Name is the name it was opened by.
	Name string
}

// open is the stores this instance has open, by name: a warm instance
// serves many requests, and the host allows 16 open stores per instance.
var open = map[string]*Store{}

// Open returns the store the manifest grants under name, opened on first
// use and kept for the instance's later requests.
func Open(name string) (*Store, error) {
	if s, ok := open[name]; ok {
		return s, nil
	}
	polytrace.Flush()
	defer polytrace.HoldGC()() // see polytrace.CallHost
	r := witstore.Open(name)
	if r.IsErr() {
		return nil, toError(r.Err())
	}
	s := &Store{bucket: r.Ok(), Name: name}
	open[name] = s
	return s, nil
}

// Get returns the value of key, and whether it has one.
func (s *Store) Get(key string) ([]byte, bool, error) {
	polytrace.Flush()
	defer polytrace.HoldGC()() // see polytrace.CallHost
	r := s.bucket.Get(key)
	if r.IsErr() {
		return nil, false, toError(r.Err())
	}
	v := r.Ok()
	if v.IsNone() {
		return nil, false, nil
	}
	return v.Some(), true, nil
}

// Set sets key to value.
func (s *Store) Set(key string, value []byte) error {
	polytrace.Flush()
	defer polytrace.HoldGC()() // see polytrace.CallHost
	if r := s.bucket.Set(key, value); r.IsErr() {
		return toError(r.Err())
	}
	return nil
}

// Delete removes key; no error when it is not there.
func (s *Store) Delete(key string) error {
	polytrace.Flush()
	defer polytrace.HoldGC()() // see polytrace.CallHost
	if r := s.bucket.Delete(key); r.IsErr() {
		return toError(r.Err())
	}
	return nil
}

// Exists reports whether key has a value.
func (s *Store) Exists(key string) (bool, error) {
	polytrace.Flush()
	defer polytrace.HoldGC()() // see polytrace.CallHost
	r := s.bucket.Exists(key)
	if r.IsErr() {
		return false, toError(r.Err())
	}
	return r.Ok(), nil
}

// Increment adds delta to the integer at key (0 when there is none),
// atomically, and returns the new value.
func (s *Store) Increment(key string, delta uint64) (uint64, error) {
	polytrace.Flush()
	defer polytrace.HoldGC()() // see polytrace.CallHost
	r := witatomics.Increment(s.bucket, key, delta)
	if r.IsErr() {
		return 0, toError(r.Err())
	}
	return r.Ok(), nil
}

// GetMany returns the values of keys in one operation; keys without a
// value are absent from the map.
func (s *Store) GetMany(keys []string) (map[string][]byte, error) {
	polytrace.Flush()
	defer polytrace.HoldGC()() // see polytrace.CallHost
	r := witbatch.GetMany(s.bucket, keys)
	if r.IsErr() {
		return nil, toError(r.Err())
	}
	values := make(map[string][]byte, len(keys))
	for _, pair := range r.Ok() {
		if pair.IsSome() {
			kv := pair.Some()
			values[kv.F0] = kv.F1
		}
	}
	return values, nil
}

// SetMany sets every key of values in one operation.
func (s *Store) SetMany(values map[string][]byte) error {
	polytrace.Flush()
	defer polytrace.HoldGC()() // see polytrace.CallHost
	pairs := make([]witTypes.Tuple2[string, []uint8], 0, len(values))
	for k, v := range values {
		pairs = append(pairs, witTypes.Tuple2[string, []uint8]{F0: k, F1: v})
	}
	if r := witbatch.SetMany(s.bucket, pairs); r.IsErr() {
		return toError(r.Err())
	}
	return nil
}

// DeleteMany removes keys in one operation.
func (s *Store) DeleteMany(keys []string) error {
	polytrace.Flush()
	defer polytrace.HoldGC()() // see polytrace.CallHost
	if r := witbatch.DeleteMany(s.bucket, keys); r.IsErr() {
		return toError(r.Err())
	}
	return nil
}

// Keys returns every key, asking a page at a time (in no promised order).
func (s *Store) Keys() ([]string, error) {
	defer polytrace.HoldGC()() // see polytrace.CallHost
	var keys []string
	cursor := witTypes.None[uint64]()
	for {
		polytrace.Flush()
		r := s.bucket.ListKeys(cursor)
		if r.IsErr() {
			return nil, toError(r.Err())
		}
		page := r.Ok()
		keys = append(keys, page.Keys...)
		if page.Cursor.IsNone() {
			return keys, nil
		}
		cursor = page.Cursor
	}
}

// Close drops the store's handle now (the host drops it with the
// instance); the next Open of the name opens it again.
func (s *Store) Close() {
	if open[s.Name] == s {
		delete(open, s.Name)
	}
	s.bucket.Drop()
}
