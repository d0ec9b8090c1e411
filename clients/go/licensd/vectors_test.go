package licensd

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	auditv1 "licensd.dev/client/gen/licensd/audit/v1"
	licensingv1 "licensd.dev/client/gen/licensd/licensing/v1"
)

// vectors is docs/test-vectors.json, the known answers every licensd client must give.
type vectors struct {
	Keys struct {
		Ed25519 []struct {
			Kid          string `json:"kid"`
			PublicKeyHex string `json:"public_key_hex"`
		} `json:"ed25519"`
	} `json:"keys"`
	LicenseKeys struct {
		Vectors []struct {
			Name, Input, Expect, Normalized string
			DigestHex                       string `json:"digest_hex"`
		} `json:"vectors"`
	} `json:"license_keys"`
	LicenseFiles struct {
		Cases []struct {
			Name, File, Now, Expect, Fingerprint string
			Keys                                 []string
			HMACSecret                           string `json:"hmac_secret"`
			AllowHMAC                            bool   `json:"allow_hmac"`
			LicenseKey                           string `json:"license_key"`
		} `json:"cases"`
	} `json:"license_files"`
	Leases struct {
		Cases []struct {
			Name, Token, Now, Expect, Fingerprint string
			Keys                                  []string
		} `json:"cases"`
	} `json:"leases"`
	ValidateLicense struct {
		Answers map[string]struct {
			Request              json.RawMessage `json:"request"`
			ResponseJSON         json.RawMessage        `json:"response_json"`
			ResponseBinaryBase64 string                 `json:"response_binary_base64"`
			SigningText          string                 `json:"signing_text"`
		} `json:"answers"`
		Cases []struct {
			Name, Answer string
			ResponseJSON json.RawMessage `json:"response_json"`
			Keys         []string
			Expect       bool
		} `json:"cases"`
	} `json:"validate_license"`
	OfflineActivation struct {
		Requests []struct {
			Name, Key, Text string
			RequestJSON     string `json:"request_json"`
		} `json:"requests"`
		Cases []struct{ Name, Key, Text, Expect string } `json:"cases"`
	} `json:"offline_activation"`
	Audit struct {
		TenantID     string `json:"tenant_id"`
		RetentionCut struct {
			Seq          int64  `json:"seq"`
			HashHex      string `json:"hash_hex"`
			CutAt        string `json:"cut_at"`
			SignedText   string `json:"signed_text"`
			Kid          string `json:"kid"`
			SignatureHex string `json:"signature_hex"`
		} `json:"retention_cut"`
		HMACKeysHex map[string]string `json:"hmac_keys_hex"`
		Entries     []struct {
			Seq           int64
			CanonicalJSON string          `json:"canonical_json"`
			HashHex       string          `json:"hash_hex"`
			Kid           string          `json:"kid"`
			SignatureHex  string          `json:"signature_hex"`
			LeafHashHex   string          `json:"leaf_hash_hex"`
			APIJSON       json.RawMessage `json:"api_json"`
		} `json:"entries"`
		TamperedEntries []struct {
			Name, Expect string
			Seq          int64
			APIJSON      json.RawMessage `json:"api_json"`
		} `json:"tampered_entries"`
		Roots []struct {
			TreeSize int64  `json:"tree_size"`
			RootHex  string `json:"root_hex"`
		} `json:"roots"`
		CheckpointCases []struct {
			Name    string
			APIJSON json.RawMessage `json:"api_json"`
			Keys    []string
			Expect  bool
		} `json:"checkpoint_cases"`
		InclusionProofs []struct {
			Name         string
			LeafIndex    int64    `json:"leaf_index"`
			TreeSize     int64    `json:"tree_size"`
			EntryHashHex string   `json:"entry_hash_hex"`
			ProofHex     []string `json:"proof_hex"`
			Expect       bool
		} `json:"inclusion_proofs"`
		ConsistencyProofs []struct {
			Name     string
			OldSize  int64    `json:"old_size"`
			NewSize  int64    `json:"new_size"`
			ProofHex []string `json:"proof_hex"`
			Expect   bool
		} `json:"consistency_proofs"`
	} `json:"audit"`
	Merkle struct {
		LeavesHex []string `json:"leaves_hex"`
		Roots     []struct {
			TreeSize int64  `json:"tree_size"`
			RootHex  string `json:"root_hex"`
		} `json:"roots"`
	} `json:"merkle"`
	Webhooks json.RawMessage `json:"webhooks"` // read by TestVectorsWebhooks
}

func loadVectors(t *testing.T) *vectors {
	t.Helper()
	path := os.Getenv("LICENSD_TEST_VECTORS")
	if path == "" {
		path = filepath.Join("..", "..", "..", "docs", "test-vectors.json")
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("docs/test-vectors.json (or LICENSD_TEST_VECTORS): %v", err)
	}
	var v vectors
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	return &v
}

func (v *vectors) keys(t *testing.T, kids []string) Keys {
	t.Helper()
	all := map[string]ed25519.PublicKey{}
	for _, k := range v.Keys.Ed25519 {
		all[k.Kid] = mustHex(t, k.PublicKeyHex)
	}
	keys := Keys{}
	for _, kid := range kids {
		keys[kid] = all[kid] // a kid the vectors do not publish stays unknown
		if keys[kid] == nil {
			delete(keys, kid)
		}
	}
	return keys
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	ts, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

func TestVectorsLicenseKeys(t *testing.T) {
	v := loadVectors(t)
	n := 0
	for _, c := range v.LicenseKeys.Vectors {
		if c.Normalized == "" {
			continue
		}
		n++
		if got := NormalizeLicenseKey(c.Input); got != c.Normalized {
			t.Errorf("%s: normalised %q, want %q", c.Name, got, c.Normalized)
		}
		if d := sha256.Sum256([]byte(NormalizeLicenseKey(c.Input))); hex.EncodeToString(d[:]) != c.DigestHex {
			t.Errorf("%s: digest differs", c.Name)
		}
	}
	if n < 5 {
		t.Fatalf("only %d license key vectors", n)
	}
}

func TestVectorsLicenseFiles(t *testing.T) {
	v := loadVectors(t)
	if len(v.LicenseFiles.Cases) < 30 {
		t.Fatalf("only %d license file cases", len(v.LicenseFiles.Cases))
	}
	for _, c := range v.LicenseFiles.Cases {
		r := VerifyLicenseFile(c.File, LicenseFileOptions{
			Keys: v.keys(t, c.Keys), HMACSecret: c.HMACSecret, AllowHMAC: c.AllowHMAC,
			LicenseKey: c.LicenseKey, Fingerprint: c.Fingerprint, Now: mustTime(t, c.Now),
		})
		if r.Code != c.Expect || r.Valid != (c.Expect == CodeValid) {
			t.Errorf("%s: %s (valid %v), want %s", c.Name, r.Code, r.Valid, c.Expect)
		}
		if r.Valid && (r.Claims == nil || r.Claims.LicenseID == "" || len(r.Claims.Features) == 0) {
			t.Errorf("%s: valid, but the claims were not read: %+v", c.Name, r.Claims)
		}
	}
}

func TestVectorsLeases(t *testing.T) {
	v := loadVectors(t)
	if len(v.Leases.Cases) < 10 {
		t.Fatalf("only %d lease cases", len(v.Leases.Cases))
	}
	for _, c := range v.Leases.Cases {
		r := VerifyLease(c.Token, v.keys(t, c.Keys), c.Fingerprint, mustTime(t, c.Now))
		if r.Code != c.Expect || r.Valid != (c.Expect == CodeValid) {
			t.Errorf("%s: %s, want %s", c.Name, r.Code, c.Expect)
		}
		if r.Valid && (r.Claims.MachineID == "" || r.Claims.ExpiresAt == nil) {
			t.Errorf("%s: lease claims not read: %+v", c.Name, r.Claims)
		}
	}
}

func TestVectorsValidationAnswers(t *testing.T) {
	v := loadVectors(t)
	all := v.keys(t, []string{"sk_00000000000000000000testa", "sk_00000000000000000000testb"})
	for name, a := range v.ValidateLicense.Answers {
		// The signing text is the canonical JSON of the answer without kid and signature.
		var m map[string]interface{}
		_ = json.Unmarshal(a.ResponseJSON, &m)
		delete(m, "kid")
		delete(m, "signature")
		text, _ := json.Marshal(m)
		if got, err := canonicalJSON(text); err != nil || string(got) != a.SigningText {
			t.Errorf("%s: signing text\n got %s\nwant %s", name, got, a.SigningText)
		}
		// Over gRPC: the binary answer, decoded by the generated code and re-encoded.
		raw, _ := base64.StdEncoding.DecodeString(a.ResponseBinaryBase64)
		var resp licensingv1.ValidateLicenseResponse
		if err := proto.Unmarshal(raw, &resp); err != nil {
			t.Fatal(err)
		}
		var req licensingv1.ValidateLicenseRequest
		if err := protojson.Unmarshal(a.Request, &req); err != nil {
			t.Fatal(err)
		}
		if err := VerifyValidationResponse(&resp, all, req.Nonce); err != nil {
			t.Errorf("%s (binary): %v", name, err)
		}
		// The signed scope is the request's; another fingerprint's or user's does not match.
		if err := CheckValidationScope(&resp, &req); err != nil {
			t.Errorf("%s: scope: %v", name, err)
		}
		other := proto.Clone(&req).(*licensingv1.ValidateLicenseRequest)
		other.Fingerprint += "-other"
		if err := CheckValidationScope(&resp, other); err != ErrScopeMismatch {
			t.Errorf("%s: scope of another fingerprint: %v, want ErrScopeMismatch", name, err)
		}
		other = proto.Clone(&req).(*licensingv1.ValidateLicenseRequest)
		other.User = "someone-else"
		if err := CheckValidationScope(&resp, other); err != ErrScopeMismatch {
			t.Errorf("%s: scope of another user: %v, want ErrScopeMismatch", name, err)
		}
		other = proto.Clone(&req).(*licensingv1.ValidateLicenseRequest)
		other.Components = append(other.Components, &licensingv1.Component{Name: "disk", Fingerprint: "d-1"})
		if err := CheckValidationScope(&resp, other); err != ErrScopeMismatch {
			t.Errorf("%s: scope with components: %v, want ErrScopeMismatch", name, err)
		}
		if err := VerifyValidationResponse(&resp, all, "another-nonce"); err != ErrNonceMismatch {
			t.Errorf("%s (binary, another nonce): %v, want ErrNonceMismatch", name, err)
		}
		if err := VerifyValidationJSON(a.ResponseJSON, all, req.Nonce); err != nil {
			t.Errorf("%s (JSON): %v", name, err)
		}
	}
	for _, c := range v.ValidateLicense.Cases {
		err := VerifyValidationJSON(c.ResponseJSON, v.keys(t, c.Keys), "")
		if (err == nil) != c.Expect {
			t.Errorf("%s: %v, want ok=%v", c.Name, err, c.Expect)
		}
		// The same answer through the generated message, as a gRPC client holds it.
		var resp licensingv1.ValidateLicenseResponse
		if err := protojson.Unmarshal(c.ResponseJSON, &resp); err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		if err := VerifyValidationResponse(&resp, v.keys(t, c.Keys), ""); (err == nil) != c.Expect {
			t.Errorf("%s (message): %v, want ok=%v", c.Name, err, c.Expect)
		}
	}
}

func auditEvent(t *testing.T, raw json.RawMessage) *auditv1.AuditEvent {
	t.Helper()
	var e auditv1.AuditEvent
	if err := protojson.Unmarshal(raw, &e); err != nil {
		t.Fatal(err)
	}
	return &e
}

func TestVectorsAuditEntries(t *testing.T) {
	v := loadVectors(t)
	hashes := map[int64][]byte{}
	var leaves [][]byte
	for _, c := range v.Audit.Entries {
		e := auditEvent(t, c.APIJSON)
		h, err := EntryHash(e)
		if err != nil || hex.EncodeToString(h) != c.HashHex || !bytes.Equal(h, e.GetHash()) {
			t.Errorf("entry %d: hash %x (%v), want %s", c.Seq, h, err, c.HashHex)
		}
		if hex.EncodeToString(LeafHash(h)) != c.LeafHashHex {
			t.Errorf("entry %d: leaf hash differs", c.Seq)
		}
		mac := hmac.New(sha256.New, mustHex(t, v.Audit.HMACKeysHex[c.Kid]))
		mac.Write(h)
		if hex.EncodeToString(mac.Sum(nil)) != c.SignatureHex {
			t.Errorf("entry %d: HMAC differs", c.Seq)
		}
		hashes[c.Seq] = h
		leaves = append(leaves, LeafHash(h))
	}
	for _, r := range v.Audit.Roots {
		if got := hex.EncodeToString(RootHash(leaves[:r.TreeSize])); got != r.RootHex {
			t.Errorf("root of size %d: %s, want %s", r.TreeSize, got, r.RootHex)
		}
	}
	// Tampered entries: the first problem a chain verifier reports.
	for _, c := range v.Audit.TamperedEntries {
		e := auditEvent(t, c.APIJSON)
		h, err := EntryHash(e)
		if err != nil {
			t.Fatal(err)
		}
		got := "OK"
		mac := hmac.New(sha256.New, mustHex(t, v.Audit.HMACKeysHex[e.GetKid()]))
		mac.Write(h)
		switch {
		case !bytes.Equal(h, e.GetHash()):
			got = "HASH_MISMATCH"
		case !bytes.Equal(e.GetPrevHash(), hashes[c.Seq-1]) && !(c.Seq == 1 && bytes.Equal(e.GetPrevHash(), make([]byte, 32))):
			got = "BROKEN_LINK"
		case !hmac.Equal(mac.Sum(nil), e.GetSignature()):
			got = "BAD_SIGNATURE"
		}
		if got != c.Expect {
			t.Errorf("%s: %s, want %s", c.Name, got, c.Expect)
		}
	}
}

func TestVectorsMerkle(t *testing.T) {
	v := loadVectors(t)
	var leaves [][]byte
	for _, l := range v.Merkle.LeavesHex {
		h := sha256.Sum256(append([]byte{0}, mustHex(t, l)...))
		leaves = append(leaves, h[:])
	}
	for _, r := range v.Merkle.Roots {
		if got := hex.EncodeToString(RootHash(leaves[:r.TreeSize])); got != r.RootHex {
			t.Errorf("CT root of size %d: %s, want %s", r.TreeSize, got, r.RootHex)
		}
	}
	roots := map[int64][]byte{}
	for _, r := range v.Audit.Roots {
		roots[r.TreeSize] = mustHex(t, r.RootHex)
	}
	proof := func(hexes []string) [][]byte {
		var p [][]byte
		for _, h := range hexes {
			p = append(p, mustHex(t, h))
		}
		return p
	}
	for _, c := range v.Audit.InclusionProofs {
		ok := VerifyInclusion(LeafHash(mustHex(t, c.EntryHashHex)), c.LeafIndex, c.TreeSize, proof(c.ProofHex), roots[c.TreeSize])
		if ok != c.Expect {
			t.Errorf("inclusion %q: %v, want %v", c.Name, ok, c.Expect)
		}
	}
	for _, c := range v.Audit.ConsistencyProofs {
		ok := VerifyConsistency(c.OldSize, c.NewSize, proof(c.ProofHex), roots[c.OldSize], roots[c.NewSize])
		if ok != c.Expect {
			t.Errorf("consistency %q (%d → %d): %v, want %v", c.Name, c.OldSize, c.NewSize, ok, c.Expect)
		}
	}
	if len(v.Audit.InclusionProofs) < 20 || len(v.Audit.ConsistencyProofs) < 30 {
		t.Fatal("fewer proof vectors than docs/test-vectors.json holds")
	}
}

func TestVectorsCheckpoints(t *testing.T) {
	v := loadVectors(t)
	for _, c := range v.Audit.CheckpointCases {
		var cp auditv1.Checkpoint
		if err := protojson.Unmarshal(c.APIJSON, &cp); err != nil {
			t.Fatal(err)
		}
		err := VerifyCheckpoint(&cp, v.keys(t, c.Keys))
		if (err == nil) != c.Expect {
			t.Errorf("%s: %v, want ok=%v", c.Name, err, c.Expect)
		}
	}
}

func TestVectorsOfflineActivation(t *testing.T) {
	v := loadVectors(t)
	for _, r := range v.OfflineActivation.Requests {
		// Rebuilt from the request's own fields and nonce: the same bytes, the same MAC.
		var req offlineRequest
		if err := json.Unmarshal([]byte(r.RequestJSON), &req); err != nil {
			t.Fatal(err)
		}
		text, err := offlineActivationRequest(OfflineActivation{
			LicenseKey: r.Key, Fingerprint: req.Fingerprint, Hostname: req.Hostname, Platform: req.Platform,
			Cores: req.Cores, Now: mustTime(t, req.CreatedAt),
		}, req.Nonce)
		if err != nil || text != r.Text {
			t.Errorf("%s:\n got %s (%v)\nwant %s", r.Name, text, err, r.Text)
		}
	}
	for _, c := range v.OfflineActivation.Cases {
		if got := CheckOfflineActivationRequest(c.Text, c.Key); got != c.Expect {
			t.Errorf("%s: %s, want %s", c.Name, got, c.Expect)
		}
	}
	if len(v.OfflineActivation.Cases) < 6 {
		t.Fatal("fewer offline activation cases than the file holds")
	}
}

func TestVectorsRetentionCut(t *testing.T) {
	v := loadVectors(t)
	c := v.Audit.RetentionCut
	text := fmt.Sprintf("licensd.dev/audit-cut/v1\n%s\n%d\n%s\n%d\n", v.Audit.TenantID, c.Seq, c.HashHex, mustTime(t, c.CutAt).UnixMilli())
	if text != c.SignedText {
		t.Fatalf("cut text %q, want %q", text, c.SignedText)
	}
	key := v.keys(t, []string{c.Kid})[c.Kid]
	if !ed25519.Verify(key, []byte(c.SignedText), mustHex(t, c.SignatureHex)) {
		t.Fatal("the retention cut's signature does not verify")
	}
}
