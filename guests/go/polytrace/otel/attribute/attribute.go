// Package attribute has the shapes of go.opentelemetry.io/otel/attribute:
// attribute.String("transaction.id", id), attribute.Key("k").Int(3).
// Code written against the official package ports by changing the import
// path to wit_component/polytrace/otel/attribute.
package attribute

import (
	"fmt"

	"wit_component/polytrace"
)

// KeyValue is one attribute (the host's typed key-value).
type KeyValue = polytrace.Attribute

// Key is an attribute key; its methods make a KeyValue.
type Key string

func (k Key) String(v string) KeyValue          { return polytrace.String(string(k), v) }
func (k Key) Bool(v bool) KeyValue              { return polytrace.Bool(string(k), v) }
func (k Key) Int(v int) KeyValue                { return polytrace.Int(string(k), v) }
func (k Key) Int64(v int64) KeyValue            { return polytrace.Int64(string(k), v) }
func (k Key) Float64(v float64) KeyValue        { return polytrace.Float64(string(k), v) }
func (k Key) StringSlice(v []string) KeyValue   { return polytrace.Strings(string(k), v) }
func (k Key) BoolSlice(v []bool) KeyValue       { return polytrace.Bools(string(k), v) }
func (k Key) Int64Slice(v []int64) KeyValue     { return polytrace.Int64s(string(k), v) }
func (k Key) Float64Slice(v []float64) KeyValue { return polytrace.Float64s(string(k), v) }
func (k Key) IntSlice(v []int) KeyValue         { return k.Int64Slice(toInt64s(v)) }
func (k Key) Stringer(v fmt.Stringer) KeyValue  { return k.String(v.String()) }

func String(k, v string) KeyValue                 { return Key(k).String(v) }
func Bool(k string, v bool) KeyValue              { return Key(k).Bool(v) }
func Int(k string, v int) KeyValue                { return Key(k).Int(v) }
func Int64(k string, v int64) KeyValue            { return Key(k).Int64(v) }
func Float64(k string, v float64) KeyValue        { return Key(k).Float64(v) }
func StringSlice(k string, v []string) KeyValue   { return Key(k).StringSlice(v) }
func BoolSlice(k string, v []bool) KeyValue       { return Key(k).BoolSlice(v) }
func IntSlice(k string, v []int) KeyValue         { return Key(k).IntSlice(v) }
func Int64Slice(k string, v []int64) KeyValue     { return Key(k).Int64Slice(v) }
func Float64Slice(k string, v []float64) KeyValue { return Key(k).Float64Slice(v) }
func Stringer(k string, v fmt.Stringer) KeyValue  { return Key(k).Stringer(v) }

func toInt64s(v []int) []int64 {
	out := make([]int64, len(v))
	for i, x := range v {
		out[i] = int64(x)
	}
	return out
}
