package licensd

import (
	"context"
	"crypto/ed25519"
	"sync"
	"time"

	activationv1 "licensd.dev/client/gen/licensd/activation/v1"
)

// DefaultSigningKeysTTL is how long fetched signing keys are used before a refetch.
const DefaultSigningKeysTTL = time.Hour

// minRefetch keeps a stream of answers naming unknown kids (forged, or a key that never
// existed) from turning into a stream of GetSigningKeys calls.
const minRefetch = 10 * time.Second

// SigningKeys fetches licensd's Ed25519 public keys (ActivationService.GetSigningKeys, a
// public call), keeps them for a TTL, and refetches once when asked for a kid it does not
// hold: after `licensd keys rotate`, the first answer signed by the new key brings it in.
// Keys past their not_after are dropped. Safe for concurrent use.
//
// A signature is only as trustworthy as the key list: fetch it over TLS, or pin keys in
// your product with StaticKeys instead.
type SigningKeys struct {
	fetch func(context.Context) (*activationv1.GetSigningKeysResponse, error)
	ttl   time.Duration
	now   func() time.Time

	mu        sync.Mutex
	keys      Keys
	fetchedAt time.Time
}

// NewSigningKeys fetches through client (Client.SigningKeys is one already made).
func NewSigningKeys(client activationv1.ActivationServiceClient, ttl time.Duration) *SigningKeys {
	if ttl <= 0 {
		ttl = DefaultSigningKeysTTL
	}
	return &SigningKeys{
		fetch: func(ctx context.Context) (*activationv1.GetSigningKeysResponse, error) {
			return client.GetSigningKeys(ctx, &activationv1.GetSigningKeysRequest{})
		},
		ttl: ttl,
		now: time.Now,
	}
}

// Keys returns every published key, fetching when none are held or they are older than
// the TTL. When a refetch fails, the keys held so far are returned with the error.
func (s *SigningKeys) Keys(ctx context.Context) (Keys, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.keys != nil && s.now().Sub(s.fetchedAt) < s.ttl {
		return s.keys, nil
	}
	err := s.refresh(ctx)
	return s.keys, err
}

// KeysFor returns the keys, making sure each kid given is among them if licensd
// publishes it: an unknown kid triggers one refetch (at most one per 10 s). Pass the kid
// of the answer, file or checkpoint you are about to verify.
func (s *SigningKeys) KeysFor(ctx context.Context, kids ...string) (Keys, error) {
	keys, err := s.Keys(ctx)
	if err != nil && keys == nil {
		return nil, err
	}
	for _, kid := range kids {
		if _, ok := keys[kid]; ok || kid == "" {
			continue
		}
		s.mu.Lock()
		if s.now().Sub(s.fetchedAt) >= minRefetch {
			err = s.refresh(ctx)
		}
		keys = s.keys
		s.mu.Unlock()
		break
	}
	return keys, err
}

// refresh fetches the key list; the caller holds s.mu.
func (s *SigningKeys) refresh(ctx context.Context) error {
	resp, err := s.fetch(ctx)
	if err != nil {
		return err
	}
	now := s.now()
	keys := Keys{}
	for _, k := range resp.GetKeys() {
		if k.GetAlgorithm() != "Ed25519" || len(k.GetPublicKey()) != ed25519.PublicKeySize {
			continue
		}
		if na := k.GetNotAfter(); na != nil && !na.AsTime().After(now) {
			continue
		}
		keys[k.GetKid()] = ed25519.PublicKey(k.GetPublicKey())
	}
	s.keys, s.fetchedAt = keys, now
	return nil
}

// StaticKeys builds Keys from pinned raw public keys (kid → 32 bytes).
func StaticKeys(raw map[string][]byte) Keys {
	keys := Keys{}
	for kid, k := range raw {
		if len(k) == ed25519.PublicKeySize {
			keys[kid] = ed25519.PublicKey(k)
		}
	}
	return keys
}
