package licensd

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"

	"google.golang.org/protobuf/encoding/protojson"

	auditv1 "licensd.dev/client/gen/licensd/audit/v1"
)

// EntryHash is the hash of an audit entry, recomputed from its fields (docs/formats.md,
// "Audit log entries"): SHA-256 of the canonical JSON of the nine members it covers.
func EntryHash(e *auditv1.AuditEvent) ([]byte, error) {
	payload := []byte("{}")
	if e.GetPayload() != nil {
		var err error
		if payload, err = protojson.Marshal(e.GetPayload()); err != nil {
			return nil, err
		}
	}
	if e.GetOccurTime() == nil {
		return nil, fmt.Errorf("%w: audit entry %d has no occur_time", ErrMalformed, e.GetSeq())
	}
	fields := map[string]interface{}{
		"tenant_id":   e.GetTenantId(),
		"seq":         json.Number(strconv.FormatInt(e.GetSeq(), 10)),
		"id":          e.GetId(),
		"type":        e.GetType(),
		"subject":     e.GetSubject(),
		"actor":       e.GetActor(),
		"payload":     json.RawMessage(payload),
		"occurred_at": e.GetOccurTime().AsTime().UTC().Format("2006-01-02T15:04:05.000Z"),
		"prev_hash":   hex.EncodeToString(e.GetPrevHash()),
	}
	text, err := json.Marshal(fields)
	if err != nil {
		return nil, err
	}
	canonical, err := canonicalJSON(text)
	if err != nil {
		return nil, err
	}
	h := sha256.Sum256(canonical)
	return h[:], nil
}

// LeafHash is an entry's RFC 6962 leaf: SHA-256(0x00 ‖ entry hash).
func LeafHash(entryHash []byte) []byte {
	h := sha256.Sum256(append([]byte{0}, entryHash...))
	return h[:]
}

func nodeHash(left, right []byte) []byte {
	b := make([]byte, 0, 1+len(left)+len(right))
	b = append(append(append(b, 1), left...), right...)
	h := sha256.Sum256(b)
	return h[:]
}

// RootHash is the RFC 6962 tree hash of the given leaf hashes.
func RootHash(leaves [][]byte) []byte {
	switch len(leaves) {
	case 0:
		h := sha256.Sum256(nil)
		return h[:]
	case 1:
		return leaves[0]
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	return nodeHash(RootHash(leaves[:k]), RootHash(leaves[k:]))
}

// VerifyInclusion checks an RFC 6962 audit path (RFC 9162 §2.1.3.2): that leaf is at
// index in the tree of size whose root is root.
func VerifyInclusion(leaf []byte, index, size int64, proof [][]byte, root []byte) bool {
	if index < 0 || index >= size {
		return false
	}
	fn, sn, r := index, size-1, leaf
	for _, p := range proof {
		if sn == 0 {
			return false
		}
		if fn%2 == 1 || fn == sn {
			r = nodeHash(p, r)
			if fn%2 == 0 {
				for fn%2 == 0 && fn != 0 {
					fn >>= 1
					sn >>= 1
				}
			}
		} else {
			r = nodeHash(r, p)
		}
		fn >>= 1
		sn >>= 1
	}
	return sn == 0 && bytes.Equal(r, root)
}

// VerifyConsistency checks an RFC 6962 consistency proof (RFC 9162 §2.1.4.2): that the
// tree of size2 with root2 extends the tree of size1 with root1.
func VerifyConsistency(size1, size2 int64, proof [][]byte, root1, root2 []byte) bool {
	if size1 <= 0 || size1 > size2 {
		return false
	}
	if size1 == size2 {
		return len(proof) == 0 && bytes.Equal(root1, root2)
	}
	path := proof
	if size1&(size1-1) == 0 {
		path = append([][]byte{root1}, proof...)
	}
	if len(path) == 0 {
		return false
	}
	fn, sn := size1-1, size2-1
	for fn%2 == 1 {
		fn >>= 1
		sn >>= 1
	}
	fr, sr := path[0], path[0]
	for _, c := range path[1:] {
		if sn == 0 {
			return false
		}
		if fn%2 == 1 || fn == sn {
			fr = nodeHash(c, fr)
			sr = nodeHash(c, sr)
			if fn%2 == 0 {
				for fn%2 == 0 && fn != 0 {
					fn >>= 1
					sn >>= 1
				}
			}
		} else {
			sr = nodeHash(sr, c)
		}
		fn >>= 1
		sn >>= 1
	}
	return sn == 0 && bytes.Equal(fr, root1) && bytes.Equal(sr, root2)
}

// CheckpointText is the text a checkpoint's signature covers, rebuilt from its fields
// (the signed_text field that comes with it is for display and is not trusted).
func CheckpointText(cp *auditv1.Checkpoint) string {
	return fmt.Sprintf("licensd.dev/audit/v1\n%s\n%d\n%s\n%d\n", cp.GetTenantId(), cp.GetTreeSize(),
		base64.StdEncoding.EncodeToString(cp.GetRootHash()), cp.GetSignTime().AsTime().UnixMilli())
}

// VerifyCheckpoint checks that a checkpoint (AuditService.GetCheckpoint) is signed by the
// published key it names.
func VerifyCheckpoint(cp *auditv1.Checkpoint, keys Keys) error {
	key, ok := keys[cp.GetKid()]
	if !ok {
		return ErrUnknownKey
	}
	if cp.GetSignTime() == nil || len(cp.GetRootHash()) != sha256.Size {
		return ErrMalformed
	}
	if len(key) != ed25519.PublicKeySize || !ed25519.Verify(key, []byte(CheckpointText(cp)), cp.GetSignature()) {
		return ErrBadSignature
	}
	return nil
}

// AuditProof is what VerifyAuditProof checks against a signed checkpoint: an entry with
// its inclusion proof, an earlier checkpoint with a consistency proof, or both.
type AuditProof struct {
	// Checkpoint is the signed tree head everything is checked against.
	Checkpoint *auditv1.Checkpoint
	// Entry, with Inclusion (GetInclusionProof for its seq at the checkpoint's tree size):
	// the entry is in the log. Its leaf is computed from the entry itself, never taken
	// from the proof's entry_hash.
	Entry     *auditv1.AuditEvent
	Inclusion *auditv1.GetInclusionProofResponse
	// Previous, with Consistency (GetConsistencyProof from its size to the checkpoint's):
	// the log only grew since a checkpoint you kept; nothing was rewritten.
	Previous    *auditv1.Checkpoint
	Consistency *auditv1.GetConsistencyProofResponse
}

// VerifyAuditProof verifies the checkpoint's signature, then each proof given in p.
func VerifyAuditProof(p AuditProof, keys Keys) error {
	if p.Checkpoint == nil {
		return fmt.Errorf("%w: no checkpoint", ErrMalformed)
	}
	if err := VerifyCheckpoint(p.Checkpoint, keys); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	size, root := p.Checkpoint.GetTreeSize(), p.Checkpoint.GetRootHash()
	if p.Entry != nil || p.Inclusion != nil {
		if p.Entry == nil || p.Inclusion == nil {
			return fmt.Errorf("%w: an entry needs its inclusion proof", ErrMalformed)
		}
		if p.Entry.GetTenantId() != p.Checkpoint.GetTenantId() {
			return fmt.Errorf("entry: %w", ErrCheckpointTenant)
		}
		h, err := EntryHash(p.Entry)
		if err != nil {
			return err
		}
		if p.Inclusion.GetTreeSize() != size || p.Inclusion.GetLeafIndex() != p.Entry.GetSeq()-1 ||
			!VerifyInclusion(LeafHash(h), p.Entry.GetSeq()-1, size, p.Inclusion.GetHashes(), root) {
			return fmt.Errorf("inclusion of entry %d: %w", p.Entry.GetSeq(), ErrProofInvalid)
		}
	}
	if p.Previous != nil || p.Consistency != nil {
		if p.Previous == nil || p.Consistency == nil {
			return fmt.Errorf("%w: a previous checkpoint needs its consistency proof", ErrMalformed)
		}
		if err := VerifyCheckpoint(p.Previous, keys); err != nil {
			return fmt.Errorf("previous checkpoint: %w", err)
		}
		if p.Previous.GetTenantId() != p.Checkpoint.GetTenantId() {
			return ErrCheckpointTenant
		}
		old := p.Previous.GetTreeSize()
		if p.Consistency.GetOldSize() != old || p.Consistency.GetNewSize() != size {
			return fmt.Errorf("consistency %d → %d: %w", old, size, ErrProofInvalid)
		}
		// Every log extends the empty one: there is nothing to prove from size 0.
		if old != 0 && !VerifyConsistency(old, size, p.Consistency.GetHashes(), p.Previous.GetRootHash(), root) {
			return fmt.Errorf("consistency %d → %d: %w", old, size, ErrProofInvalid)
		}
	}
	return nil
}
