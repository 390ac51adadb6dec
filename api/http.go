package api

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
)

// WriteError writes IoT Hub's HTTP error response: the iothub-errorcode header and the
// {"Message":"ErrorCode:<code>;<text>","ExceptionMessage":"<text>"} body. The service API and the
// HTTPS device API both answer this way.
func WriteError(w http.ResponseWriter, status int, code, text string) {
	w.Header().Set("iothub-errorcode", code)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(NewErrorBody(code, text))
}

// RequestID is the x-ms-request-id of a response: the caller's Request-Id (the SDKs send one)
// when it has a sane length, otherwise a new random id.
func RequestID(r *http.Request) string {
	if id := r.Header.Get("Request-Id"); id != "" && len(id) <= 128 {
		return id
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
