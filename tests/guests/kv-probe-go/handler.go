// The key-value test guest in Go (tests/tests/keyvalue.rs): the same routes
// and answers as tests/guests/kv-probe (Python), through
// wit_component/polytrace/keyvalue.
package export_wasi_http_incoming_handler

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"wit_component/polytrace/keyvalue"
	"wit_component/polytrace/nethttp"
	wasihttp "wit_component/wasi_http_types"
)

var mux = http.HandlerFunc(serve)

// Handle serves every request.
func Handle(request *wasihttp.IncomingRequest, out *wasihttp.ResponseOutparam) {
	nethttp.Serve(mux, request, out)
}

func str(args []any, i int) string {
	if i < len(args) {
		if s, ok := args[i].(string); ok {
			return s
		}
	}
	return ""
}

func strs(v any) []string {
	var out []string
	if list, ok := v.([]any); ok {
		for _, x := range list {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
	}
	return out
}

func text(v []byte, found bool) any {
	if !found {
		return nil
	}
	return string(v)
}

func run(s *keyvalue.Store, op string, args []any) (any, error) {
	switch op {
	case "get":
		v, found, err := s.Get(str(args, 0))
		return text(v, found), err
	case "set":
		return nil, s.Set(str(args, 0), []byte(str(args, 1)))
	case "delete":
		return nil, s.Delete(str(args, 0))
	case "exists":
		return s.Exists(str(args, 0))
	case "increment":
		delta := uint64(1)
		if len(args) > 1 {
			if f, ok := args[1].(float64); ok {
				delta = uint64(f)
			}
		}
		return s.Increment(str(args, 0), delta)
	case "get_many":
		keys := strs(args[0])
		values, err := s.GetMany(keys)
		out := map[string]any{}
		for _, k := range keys {
			v, found := values[k]
			out[k] = text(v, found)
		}
		return out, err
	case "set_many":
		values := map[string][]byte{}
		if m, ok := args[0].(map[string]any); ok {
			for k, v := range m {
				values[k] = []byte(fmt.Sprint(v))
			}
		}
		return nil, s.SetMany(values)
	case "delete_many":
		return nil, s.DeleteMany(strs(args[0]))
	case "keys":
		keys, err := s.Keys()
		sort.Strings(keys)
		return keys, err
	}
	return nil, fmt.Errorf("unknown op %s", op)
}

func serve(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("store")
	if name == "" {
		name = "cache"
	}
	var ops [][]any
	if r.URL.Path == "/big-key" {
		big := strings.Repeat("k", 1<<20)
		ops = [][]any{{"set", big, "v"}, {"get", big}, {"set", "small", "ok"}, {"get", "small"}}
	} else if err := json.NewDecoder(r.Body).Decode(&ops); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	results := []any{}
	var store *keyvalue.Store
	for _, op := range ops {
		verb, _ := op[0].(string)
		args := op[1:]
		var result any
		var err error
		if verb == "open" {
			which := name
			if len(args) > 0 {
				which = str(args, 0)
			}
			var opened *keyvalue.Store
			if opened, err = keyvalue.Open(which); err == nil {
				store = opened
			}
		} else {
			if store == nil {
				store, err = keyvalue.Open(name)
			}
			if err == nil {
				result, err = run(store, verb, args)
			}
		}
		var kvErr *keyvalue.Error
		if errors.As(err, &kvErr) {
			result = map[string]string{"error": kvErr.Kind, "message": kvErr.Message}
		} else if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		results = append(results, result)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(results)
}
