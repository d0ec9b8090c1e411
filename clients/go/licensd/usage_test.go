package licensd

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestUsageSpoolBatchesAndRecovery(t *testing.T) {
	dir := t.TempDir()
	u, err := NewUsageUploader(nil, UsageUploaderOptions{Dir: dir, LicenseKey: "ACME-custom.key_2027", BatchSize: 3})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 7; i++ {
		if err := u.Record("tokens", int64(i), map[string]string{"model": "m1"}); err != nil {
			t.Fatal(err)
		}
	}
	batches, _ := u.batches()
	if len(batches) != 2 || u.Pending() != 7 {
		t.Fatalf("7 events in batches of 3: %d batch files, %d pending", len(batches), u.Pending())
	}
	req, err := u.readBatch(batches[0])
	if err != nil || len(req.Events) != 3 || !strings.HasPrefix(req.BatchId, "batch-") {
		t.Fatalf("%v %v", req, err)
	}
	keys := map[string]bool{}
	for _, e := range req.Events {
		if e.GetLicenseKey() != "ACME-custom.key_2027" || e.GetMetric() != "tokens" || e.GetIdempotencyKey() == "" || e.GetTime() == nil {
			t.Fatalf("event %v", e)
		}
		keys[e.GetIdempotencyKey()] = true
	}
	if len(keys) != 3 {
		t.Fatal("idempotency keys are not unique")
	}
	// The same batch read again (a resend after a crash) carries the same keys.
	again, _ := u.readBatch(batches[0])
	for _, e := range again.Events {
		if !keys[e.GetIdempotencyKey()] {
			t.Fatal("a resent batch got new idempotency keys")
		}
	}

	// A crash in the middle of a write leaves half a line: it is cut off on open.
	f, _ := os.OpenFile(filepath.Join(dir, activeSpool), os.O_WRONLY|os.O_APPEND, 0)
	_, _ = f.WriteString(`{"k":"u-torn","m":"tok`)
	_ = f.Close()
	u2, err := NewUsageUploader(nil, UsageUploaderOptions{Dir: dir, LicenseKey: "ACME-custom.key_2027", BatchSize: 3})
	if err != nil {
		t.Fatal(err)
	}
	if u2.Pending() != 7 {
		t.Fatalf("after a torn write: %d pending, want 7", u2.Pending())
	}
	if err := u2.Record("tokens", 1, nil); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(filepath.Join(dir, activeSpool))
	if strings.Contains(string(data), "u-torn") || strings.Count(string(data), "\n") != 2 {
		t.Fatalf("active spool after recovery:\n%s", data)
	}
}

func TestUsageSpoolFullRefusesNewEventsAndKeepsOld(t *testing.T) {
	dir := t.TempDir()
	u, err := NewUsageUploader(nil, UsageUploaderOptions{Dir: dir, LicenseID: "lic_x", MaxSpoolBytes: 1000})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for ; n < 100; n++ {
		if err := u.Record("tokens", 1, nil); err != nil {
			if !errors.Is(err, ErrSpoolFull) {
				t.Fatal(err)
			}
			break
		}
	}
	if n == 0 || n == 100 || u.Pending() != n {
		t.Fatalf("%d events recorded before the spool was full, %d pending", n, u.Pending())
	}
	if fi, _ := os.Stat(filepath.Join(dir, activeSpool)); fi.Size() > 1000 {
		t.Fatalf("spool grew to %d bytes", fi.Size())
	}
}
