// A webhook receiver written from docs/webhooks.md ("Verifying a delivery"). Usage:
//
//	WEBHOOK_SECRETS='{"/ok": "whsec_...", "/wrong": "whsec_..."}' go_webhook_receiver PORT
//
// Listens on 127.0.0.1:PORT; each path has the secret the map gives it (an unknown path: 404).
// Prints {"listening": PORT} once bound, then one JSON line per delivery:
// {"path", "ok", "id", "type", "reason", "signatures"} (a refusal's id is the unverified
// webhook-id header).
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"licensd.dev/client/licensd"
)

// The refusal reasons the other clients name, by the Go error each one is.
var reasons = []struct {
	err    error
	reason string
}{
	{licensd.ErrWebhookMissingHeaders, "MISSING_HEADERS"},
	{licensd.ErrWebhookBadSecret, "BAD_SECRET"},
	{licensd.ErrWebhookMalformed, "MALFORMED"},
	{licensd.ErrWebhookTimestamp, "TIMESTAMP_OUT_OF_TOLERANCE"},
	{licensd.ErrWebhookBadSignature, "BAD_SIGNATURE"},
}

type line struct {
	Path       string  `json:"path"`
	OK         bool    `json:"ok"`
	ID         *string `json:"id"`
	Type       *string `json:"type"`
	Reason     *string `json:"reason"`
	Signatures int     `json:"signatures"`
}

var out sync.Mutex

func report(v any) {
	out.Lock()
	defer out.Unlock()
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

func reasonOf(err error) string {
	for _, r := range reasons {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	return err.Error()
}

func main() {
	secrets := map[string]string{}
	if err := json.Unmarshal([]byte(os.Getenv("WEBHOOK_SECRETS")), &secrets); err != nil {
		fmt.Fprintln(os.Stderr, "WEBHOOK_SECRETS:", err)
		os.Exit(2)
	}
	for path, secret := range secrets {
		path, secret := path, secret
		http.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
			if err != nil {
				http.Error(w, "unreadable body", http.StatusBadRequest)
				return
			}
			signatures := len(strings.Fields(r.Header.Get("webhook-signature")))
			msg, err := licensd.VerifyWebhook(body, r.Header, secret, time.Time{}) // zero time: now
			if err != nil {
				// A refused delivery's id is the unverified webhook-id header.
				id, reason := r.Header.Get("webhook-id"), reasonOf(err)
				report(line{Path: path, ID: &id, Reason: &reason, Signatures: signatures})
				http.Error(w, reason, http.StatusBadRequest)
				return
			}
			var event struct {
				Type string          `json:"type"`
				Data json.RawMessage `json:"data"`
			}
			if err := json.Unmarshal(msg.Event, &event); err != nil {
				http.Error(w, "bad event", http.StatusBadRequest)
				return
			}
			report(line{Path: path, OK: true, ID: &msg.ID, Type: &event.Type, Signatures: signatures})
			w.WriteHeader(http.StatusNoContent)
		})
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	report(map[string]int{"listening": ln.Addr().(*net.TCPAddr).Port})
	fmt.Fprintln(os.Stderr, http.Serve(ln, nil))
	os.Exit(1)
}
