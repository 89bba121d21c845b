// hello_go: the native Go baseline of the side-by-side benchmark, the
// examples/hello-go service as a plain net/http server with no OpenTelemetry
// at all (standard library only): the same request handling and the same
// JSON answer, minus the span.
//
//	PORT=8083 target/native/hello_go
//
// GET /hello/...?name=X answers {"service":...,"language":"go",
// "message":"hello","next":null}; the service is OTEL_SERVICE_NAME, else
// "hello-go". Listens on 127.0.0.1:$PORT (an ephemeral port when PORT is
// unset) and prints `listening on http://ADDR` once it serves. Built by
// scripts/setup-native.sh into target/native/hello_go.
package main

import (
	"encoding/json"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
)

type answer struct {
	Service  string `json:"service"`
	Language string `json:"language"`
	Message  string `json:"message"`
	Next     any    `json:"next"`
}

func helloHandler(service string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		// The traced versions put the name on their span; read it all the
		// same, so the request is parsed as theirs is.
		name := r.URL.Query().Get("name")
		if name == "" {
			name = "world"
		}
		_ = name
		body, err := json.Marshal(answer{Service: service, Language: "go", Message: "hello"})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}
}

func main() {
	service := os.Getenv("OTEL_SERVICE_NAME")
	if service == "" {
		service = "hello-go"
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "0"
	}
	hello := helloHandler(service)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", hello)
	mux.HandleFunc("GET /hello/", hello)

	listener, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening on http://%s\n", listener.Addr())
	log.Fatal(http.Serve(listener, mux))
}
