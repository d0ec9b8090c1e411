package licensd

import (
	"context"
	"crypto/ed25519"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	activationv1 "licensd.dev/client/gen/licensd/activation/v1"
)

func TestSigningKeysCacheAndRotation(t *testing.T) {
	keyA := ed25519.NewKeyFromSeed(make([]byte, 32)).Public().(ed25519.PublicKey)
	keyB := ed25519.NewKeyFromSeed([]byte("0123456789abcdef0123456789abcdef")).Public().(ed25519.PublicKey)
	now := time.Date(2027, 3, 1, 12, 0, 0, 0, time.UTC)
	published := []*activationv1.SigningKey{{Kid: "sk_a", Algorithm: "Ed25519", PublicKey: keyA}}
	fetches := 0
	s := &SigningKeys{
		ttl: time.Hour,
		now: func() time.Time { return now },
		fetch: func(context.Context) (*activationv1.GetSigningKeysResponse, error) {
			fetches++
			return &activationv1.GetSigningKeysResponse{Keys: published}, nil
		},
	}
	ctx := context.Background()
	if keys, err := s.Keys(ctx); err != nil || len(keys) != 1 || fetches != 1 {
		t.Fatalf("first fetch: %v %v (%d fetches)", keys, err, fetches)
	}
	if _, _ = s.Keys(ctx); fetches != 1 {
		t.Fatal("keys within their TTL were fetched again")
	}
	// `licensd keys rotate`: B is active, A retiring until its not_after.
	published = []*activationv1.SigningKey{
		{Kid: "sk_a", Algorithm: "Ed25519", PublicKey: keyA, NotAfter: timestamppb.New(now.Add(48 * time.Hour))},
		{Kid: "sk_b", Algorithm: "Ed25519", PublicKey: keyB},
	}
	now = now.Add(time.Minute)
	keys, err := s.KeysFor(ctx, "sk_b")
	if err != nil || keys["sk_b"] == nil || keys["sk_a"] == nil || fetches != 2 {
		t.Fatalf("an unknown kid did not bring the rotated key in: %v %v (%d fetches)", keys, err, fetches)
	}
	// A kid nobody publishes: one refetch at most every 10 s.
	now = now.Add(time.Minute)
	_, _ = s.KeysFor(ctx, "sk_forged")
	_, _ = s.KeysFor(ctx, "sk_forged")
	if fetches != 3 {
		t.Fatalf("unknown kids caused %d fetches, want 3", fetches)
	}
	// After the TTL and past A's not_after, A is gone.
	now = now.Add(72 * time.Hour)
	keys, _ = s.Keys(ctx)
	if keys["sk_a"] != nil || keys["sk_b"] == nil {
		t.Fatalf("after A's not_after: %v", keys)
	}
}
