package licensd

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	usagev1 "licensd.dev/client/gen/licensd/usage/v1"
)

// ErrSpoolFull: Record refused an event because the spool holds MaxSpoolBytes already.
// Nothing recorded is ever dropped to make room; the caller decides what to do with the
// new event (wait for the uploader to catch up, count it elsewhere, or lose it knowingly).
var ErrSpoolFull = errors.New("licensd: usage spool full")

// UsageUploaderOptions configures a UsageUploader.
type UsageUploaderOptions struct {
	// Dir is the spool directory (created if missing). One uploader per directory.
	Dir string
	// The license every event is counted against: its key (agents), or its id (an uploader
	// with an API key of ingest scope).
	LicenseKey string
	LicenseID  string
	// MaxSpoolBytes bounds the spool on disk (default 64 MiB).
	MaxSpoolBytes int64
	// BatchSize is the number of events per StreamUsage batch (default 500, at most 1000).
	BatchSize int
	// FlushInterval is how long a partial batch may wait before it is sent (default 1 s).
	FlushInterval time.Duration
	// OnAck, if set, sees every acknowledgement (accepted, duplicates, and the events
	// refused as data: LIMIT_EXCEEDED, INVALID_TIME, …, which are not sent again).
	OnAck func(*usagev1.StreamUsageResponse)
	// OnError, if set, sees why a stream ended (licensd unreachable, a refused credential,
	// …). Run keeps retrying whatever the error: the events stay in the spool.
	OnError func(error)
}

// UsageUploader counts usage durably: Record appends an event to an on-disk spool and
// fsyncs it before returning, and Run streams the spool to licensd with StreamUsage,
// deleting a batch only once licensd acknowledged it (after its commit). Each event gets
// its idempotency key when recorded, so a batch resent after a crash or a dropped
// connection is acknowledged as duplicates, never counted twice.
//
// Spool layout: events are JSON lines appended to active.jsonl; a full (or, after
// FlushInterval, partial) active file is renamed to batch-<n>.jsonl, which is sent as one
// batch and removed when acknowledged. A line torn by a crash mid-write is dropped on open.
type UsageUploader struct {
	client *Client
	opts   UsageUploaderOptions

	mu       sync.Mutex
	active   *os.File
	count    int   // events in active.jsonl
	bytes    int64 // spool size on disk
	nextSeq  int64
	sealedAt time.Time
	wake     chan struct{}
}

type spoolEvent struct {
	Key      string            `json:"k"`
	Metric   string            `json:"m"`
	Quantity int64             `json:"q"`
	TimeMs   int64             `json:"t"`
	Agent    string            `json:"g,omitempty"`
	Attrs    map[string]string `json:"a,omitempty"`
}

const activeSpool = "active.jsonl"

// NewUsageUploader opens (or creates) the spool; events left by an earlier run are sent
// by Run like new ones.
func NewUsageUploader(c *Client, o UsageUploaderOptions) (*UsageUploader, error) {
	if o.Dir == "" || (o.LicenseKey == "") == (o.LicenseID == "") {
		return nil, errors.New("licensd: UsageUploader needs Dir and one of LicenseKey and LicenseID")
	}
	if o.MaxSpoolBytes <= 0 {
		o.MaxSpoolBytes = 64 << 20
	}
	if o.BatchSize <= 0 || o.BatchSize > 1000 {
		o.BatchSize = 500
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = time.Second
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, err
	}
	u := &UsageUploader{client: c, opts: o, wake: make(chan struct{}, 1), nextSeq: time.Now().UnixNano(), sealedAt: time.Now()}
	if err := u.recover(); err != nil {
		return nil, err
	}
	return u, nil
}

// recover measures the spool and cuts a line torn by a crash off active.jsonl.
func (u *UsageUploader) recover() error {
	batches, err := u.batches()
	if err != nil {
		return err
	}
	for _, b := range batches {
		if fi, err := os.Stat(b); err == nil {
			u.bytes += fi.Size()
		}
	}
	path := filepath.Join(u.opts.Dir, activeSpool)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	whole := data[:bytes.LastIndexByte(data, '\n')+1]
	if len(whole) != len(data) {
		if err := os.Truncate(path, int64(len(whole))); err != nil {
			return err
		}
	}
	u.count = bytes.Count(whole, []byte{'\n'})
	u.bytes += int64(len(whole))
	return nil
}

// Record appends one event to the spool and returns once it is on disk (fsync'd).
// attrs may be nil. It does not wait for licensd.
func (u *UsageUploader) Record(metric string, quantity int64, attrs map[string]string) error {
	return u.RecordEvent(metric, quantity, "", attrs)
}

// RecordEvent is Record with the agent that used it (agent token allowances).
func (u *UsageUploader) RecordEvent(metric string, quantity int64, agentID string, attrs map[string]string) error {
	key := make([]byte, 18)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	line, err := json.Marshal(spoolEvent{
		Key: "u-" + base64.RawURLEncoding.EncodeToString(key), Metric: metric, Quantity: quantity,
		TimeMs: time.Now().UnixMilli(), Agent: agentID, Attrs: attrs,
	})
	if err != nil {
		return err
	}
	line = append(line, '\n')
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.bytes+int64(len(line)) > u.opts.MaxSpoolBytes {
		return ErrSpoolFull
	}
	if u.active == nil {
		f, err := os.OpenFile(filepath.Join(u.opts.Dir, activeSpool), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return err
		}
		u.active = f
	}
	if _, err := u.active.Write(line); err != nil {
		return err
	}
	if err := u.active.Sync(); err != nil {
		return err
	}
	u.count++
	u.bytes += int64(len(line))
	if u.count >= u.opts.BatchSize {
		if err := u.sealLocked(); err != nil {
			return err
		}
	}
	return nil
}

// sealLocked turns active.jsonl into the next batch file; the caller holds u.mu.
func (u *UsageUploader) sealLocked() error {
	u.sealedAt = time.Now()
	if u.count == 0 {
		return nil
	}
	if u.active != nil {
		if err := u.active.Close(); err != nil {
			return err
		}
		u.active = nil
	}
	u.nextSeq++
	name := filepath.Join(u.opts.Dir, fmt.Sprintf("batch-%020d.jsonl", u.nextSeq))
	if err := os.Rename(filepath.Join(u.opts.Dir, activeSpool), name); err != nil {
		return err
	}
	u.count = 0
	syncDir(u.opts.Dir)
	select {
	case u.wake <- struct{}{}:
	default:
	}
	return nil
}

// syncDir makes a rename or removal durable (best effort: not every OS can fsync a directory).
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

// batches lists the sealed batch files, oldest first.
func (u *UsageUploader) batches() ([]string, error) {
	names, err := filepath.Glob(filepath.Join(u.opts.Dir, "batch-*.jsonl"))
	sort.Strings(names)
	return names, err
}

// Pending is the number of recorded events licensd has not acknowledged yet.
func (u *UsageUploader) Pending() int {
	u.mu.Lock()
	n := u.count
	u.mu.Unlock()
	batches, _ := u.batches()
	for _, b := range batches {
		if data, err := os.ReadFile(b); err == nil {
			n += bytes.Count(data, []byte{'\n'})
		}
	}
	return n
}

// readBatch loads a batch file as a StreamUsage request. Lines that do not parse (there
// should be none: only whole lines are ever sealed) are skipped.
func (u *UsageUploader) readBatch(path string) (*usagev1.StreamUsageRequest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	req := &usagev1.StreamUsageRequest{BatchId: strings.TrimSuffix(filepath.Base(path), ".jsonl")}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e spoolEvent
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue
		}
		req.Events = append(req.Events, &usagev1.UsageEvent{
			LicenseKey: u.opts.LicenseKey, LicenseId: u.opts.LicenseID, Metric: e.Metric, Quantity: e.Quantity,
			Time: timestamppb.New(time.UnixMilli(e.TimeMs)), IdempotencyKey: e.Key, AgentId: e.Agent, Attributes: e.Attrs,
		})
	}
	return req, sc.Err()
}

// Run uploads the spool until ctx ends: one StreamUsage stream at a time, up to 8 batches
// in flight; when the stream breaks, it reconnects with jittered backoff and resends every
// batch not yet acknowledged. It returns nil when ctx ends.
func (u *UsageUploader) Run(ctx context.Context) error {
	failures := 0
	for ctx.Err() == nil {
		progressed, err := u.stream(ctx)
		if ctx.Err() != nil {
			break
		}
		if progressed {
			failures = 0
		}
		failures++
		capped := time.Duration(1<<uint(minInt(failures, 8))) * 100 * time.Millisecond
		if capped > 30*time.Second {
			capped = 30 * time.Second
		}
		if err != nil && u.opts.OnError != nil {
			u.opts.OnError(err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(mrand.Int63n(int64(capped)) + 1)):
		}
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.active != nil {
		err := u.active.Close()
		u.active = nil
		return err
	}
	return nil
}

func minInt(a, b int) int {
	if a < b {
		return a
	}
	return b
}

const uploadWindow = 8

// stream runs one StreamUsage stream until it breaks or ctx ends; progressed says whether
// any batch was acknowledged on it.
func (u *UsageUploader) stream(ctx context.Context) (bool, error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := u.client.Usage.StreamUsage(sctx)
	if err != nil {
		return false, err
	}
	var mu sync.Mutex // guards inflight and acked, shared with the receiving goroutine
	acked := false
	progressed := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return acked
	}
	inflight := map[string]string{} // batch id → file
	errc := make(chan error, 1)
	go func() {
		for {
			ack, err := s.Recv()
			if err != nil {
				if err == io.EOF {
					err = errors.New("licensd: StreamUsage ended")
				}
				errc <- err
				return
			}
			mu.Lock()
			path, ok := inflight[ack.GetBatchId()]
			delete(inflight, ack.GetBatchId())
			acked = true
			mu.Unlock()
			if ok {
				if fi, err := os.Stat(path); err == nil {
					u.mu.Lock()
					u.bytes -= fi.Size()
					u.mu.Unlock()
				}
				_ = os.Remove(path)
				syncDir(u.opts.Dir)
			}
			if u.opts.OnAck != nil {
				u.opts.OnAck(ack)
			}
			select {
			case u.wake <- struct{}{}:
			default:
			}
		}
	}()
	tick := time.NewTicker(u.opts.FlushInterval / 4)
	defer tick.Stop()
	for {
		u.mu.Lock()
		if time.Since(u.sealedAt) >= u.opts.FlushInterval {
			if err := u.sealLocked(); err != nil {
				u.mu.Unlock()
				return progressed(), err
			}
		}
		u.mu.Unlock()
		batches, err := u.batches()
		if err != nil {
			return progressed(), err
		}
		for _, b := range batches {
			id := strings.TrimSuffix(filepath.Base(b), ".jsonl")
			mu.Lock()
			_, sent := inflight[id]
			full := len(inflight) >= uploadWindow
			mu.Unlock()
			if sent {
				continue
			}
			if full {
				break
			}
			req, err := u.readBatch(b)
			if err != nil {
				return progressed(), err
			}
			if len(req.Events) == 0 {
				_ = os.Remove(b)
				continue
			}
			mu.Lock()
			inflight[id] = b
			mu.Unlock()
			if err := s.Send(req); err != nil {
				return progressed(), err
			}
		}
		select {
		case <-ctx.Done():
			_ = s.CloseSend()
			return progressed(), ctx.Err()
		case err := <-errc:
			return progressed(), err
		case <-u.wake:
		case <-tick.C:
		}
	}
}

// Flush seals the events recorded so far into a batch and waits until the spool is empty
// (every event acknowledged) or ctx ends. Run must be running.
func (u *UsageUploader) Flush(ctx context.Context) error {
	u.mu.Lock()
	err := u.sealLocked()
	u.mu.Unlock()
	if err != nil {
		return err
	}
	for {
		u.mu.Lock()
		empty := u.count == 0
		u.mu.Unlock()
		if batches, err := u.batches(); err == nil && empty && len(batches) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
