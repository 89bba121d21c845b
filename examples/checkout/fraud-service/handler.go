// fraud-service (Go): POST /verify → span `check_fraud_rules`
// (`transaction.id`, `fraud.detected`). It loads the session from
// session-service (unknown → 404), then the rules decide: an amount above
// 10000 is fraud (403).
package export_wasi_http_incoming_handler

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"

	"wit_component/polytrace"
	http "wit_component/wasi_http_types"
)

// FraudLimit is the amount above which a transaction is denied.
const FraudLimit = 10000.0

type verifyRequest struct {
	TransactionID string  `json:"transaction_id"`
	Amount        float64 `json:"amount"`
	SessionID     string  `json:"session_id"`
	UserID        string  `json:"user_id"`
}

func reply(out *http.ResponseOutparam, status int, body map[string]any) {
	data, _ := json.Marshal(body)
	polytrace.Respond(out, status, "application/json", data)
}

func Handle(request *http.IncomingRequest, out *http.ResponseOutparam) {
	r, err := polytrace.ReadRequest(request)
	if err != nil {
		polytrace.Respond(out, 400, "text/plain", []byte(err.Error()))
		return
	}
	if r.Method != "POST" || r.Path != "/verify" {
		reply(out, 404, map[string]any{"error": "POST /verify"})
		return
	}
	var req verifyRequest
	if err := json.Unmarshal(r.Body, &req); err != nil {
		reply(out, 400, map[string]any{"error": "bad verify request: " + err.Error()})
		return
	}
	status, body := verify(req)
	result := map[int]string{200: "approved", 403: "denied", 404: "no_session"}[status]
	if result == "" {
		result = "error"
	}
	if verifications, err := polytrace.NewCounter("verifications.performed",
		"Fraud verifications, by result", "{verification}"); err == nil {
		verifications.Add(1, polytrace.String("result", result))
	}
	if result == "denied" {
		slog.Warn("transaction denied", "transaction.id", req.TransactionID, "transaction.amount", req.Amount)
	}
	reply(out, status, body)
}

func verify(req verifyRequest) (int, map[string]any) {
	span := polytrace.Start("check_fraud_rules",
		polytrace.String("transaction.id", req.TransactionID),
		polytrace.Float64("transaction.amount", req.Amount),
	)
	defer span.End()

	status, _, err := polytrace.Send("GET", "http://session-service/sessions/"+url.PathEscape(req.SessionID), nil)
	if err != nil {
		span.RecordError(err)
		return 502, map[string]any{"error": "session-service unreachable: " + err.Error()}
	}
	if status >= 500 {
		span.SetError(fmt.Sprintf("session-service failed with %d", status))
		return 502, map[string]any{"error": "session lookup failed"}
	}
	if status != 200 {
		span.SetAttributes(polytrace.Bool("fraud.detected", false), polytrace.String("fraud.decision", "no_session"))
		return 404, map[string]any{"error": fmt.Sprintf("session %s not found", req.SessionID)}
	}

	detected := req.Amount > FraudLimit
	span.SetAttributes(polytrace.Bool("fraud.detected", detected))
	if detected {
		span.SetAttributes(polytrace.String("fraud.decision", "deny"))
		return 403, map[string]any{"approved": false, "error": fmt.Sprintf("amount %.2f is over the fraud limit", req.Amount)}
	}
	span.SetAttributes(polytrace.String("fraud.decision", "approve"))
	return 200, map[string]any{"approved": true}
}
