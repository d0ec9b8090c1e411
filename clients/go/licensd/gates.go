package licensd

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"

	licensingv1 "licensd.dev/client/gen/licensd/licensing/v1"
)

// LicenseInfo is the license state a product acts on. It is a plain value: building one
// never fails, so it can be shown on a settings page or served from a status endpoint
// whatever went wrong (the Code and Detail say what).
type LicenseInfo struct {
	Valid bool `json:"valid"`
	// Code is VALID, or why not: a verifier code (EXPIRED, BAD_SIGNATURE, …), a
	// ValidateLicense code without its prefix (SUSPENDED, NOT_FOUND, …), NO_LICENSE, or
	// UNAVAILABLE (licensd could not be asked and nothing was known before).
	Code     string   `json:"code"`
	Detail   string   `json:"detail,omitempty"`
	Features []string `json:"features"`
	// Tier is the license's plan (its policy's name, e.g. "pro").
	Tier      string     `json:"tier,omitempty"`
	LicenseID string     `json:"license_id,omitempty"`
	ExpiresAt *time.Time `json:"expires_at"` // nil: perpetual, or not known
	// InGrace: past its expiry but still valid (a grace period, or a policy that keeps
	// access); time to renew.
	InGrace bool `json:"in_grace"`
}

// HasFeature reports whether the license is valid and grants feature.
func (i LicenseInfo) HasFeature(feature string) bool {
	if !i.Valid {
		return false
	}
	for _, f := range i.Features {
		if f == feature {
			return true
		}
	}
	return false
}

// NoLicense is the state of a product run without a license.
func NoLicense(detail string) LicenseInfo {
	return LicenseInfo{Code: "NO_LICENSE", Detail: detail}
}

// LicenseInfoFromFile reads a verified license file or lease (VerifyLicenseFile, VerifyLease).
func LicenseInfoFromFile(r FileResult) LicenseInfo {
	info := LicenseInfo{Valid: r.Valid, Code: r.Code}
	if r.Claims != nil {
		info.Tier, info.LicenseID, info.ExpiresAt = r.Claims.Plan, r.Claims.LicenseID, r.Claims.ExpiresAt
		// A lease signed while the license was past its expiry but still usable.
		info.InGrace = r.Valid && r.Claims.Status == "expired"
		if r.Valid {
			info.Features = append([]string(nil), r.Claims.Features...)
		}
	}
	if !r.Valid {
		info.Detail = "license file: " + strings.ToLower(strings.ReplaceAll(r.Code, "_", " "))
	}
	return info
}

// LicenseInfoFromValidation reads a (verified) ValidateLicense answer.
func LicenseInfoFromValidation(resp *licensingv1.ValidateLicenseResponse) LicenseInfo {
	info := LicenseInfo{
		Valid:  resp.GetValid(),
		Code:   strings.TrimPrefix(resp.GetCode().String(), "VALIDATION_CODE_"),
		Detail: resp.GetDetail(),
	}
	if resp.GetValid() {
		info.Features = append([]string(nil), resp.GetFeatures()...)
	}
	// A valid answer with the EXPIRED code is a license in its grace period.
	info.InGrace = resp.GetValid() && resp.GetCode() == licensingv1.ValidationCode_VALIDATION_CODE_EXPIRED
	if l := resp.GetLicense(); l != nil {
		info.Tier, info.LicenseID = l.GetPolicyName(), l.GetId()
		if l.GetExpireTime() != nil {
			t := l.GetExpireTime().AsTime()
			info.ExpiresAt = &t
		}
	}
	return info
}

// LicenseSource gives the current license state; the gates ask it on every request.
type LicenseSource interface {
	LicenseInfo(ctx context.Context) LicenseInfo
}

// LicenseSourceFunc adapts a function to LicenseSource.
type LicenseSourceFunc func(ctx context.Context) LicenseInfo

// LicenseInfo calls f.
func (f LicenseSourceFunc) LicenseInfo(ctx context.Context) LicenseInfo { return f(ctx) }

// StaticLicense always answers info.
func StaticLicense(info LicenseInfo) LicenseSource {
	return LicenseSourceFunc(func(context.Context) LicenseInfo { return info })
}

// LicenseFile is a license file checked offline: verified once, and again when its
// expiry passes, so a running product notices the end without a restart.
func LicenseFile(file string, opts LicenseFileOptions) LicenseSource {
	var mu sync.Mutex
	var info LicenseInfo
	var checked bool
	return LicenseSourceFunc(func(context.Context) LicenseInfo {
		mu.Lock()
		defer mu.Unlock()
		now := time.Now()
		if !checked || (info.Valid && info.ExpiresAt != nil && !now.Before(*info.ExpiresAt)) {
			o := opts
			o.Now = now
			info, checked = LicenseInfoFromFile(VerifyLicenseFile(file, o)), true
		}
		return info
	})
}

// OnlineLicense validates req's license with licensd (Client.Validate: signed, nonce
// checked) at most once per ttl. When licensd cannot be reached, the last verified answer
// keeps being used until it is maxStale old (then the state is UNAVAILABLE), so a short
// outage of licensd does not switch a product off.
func OnlineLicense(c *Client, req *licensingv1.ValidateLicenseRequest, ttl, maxStale time.Duration) LicenseSource {
	var mu sync.Mutex
	var last LicenseInfo
	var lastAt time.Time
	return LicenseSourceFunc(func(ctx context.Context) LicenseInfo {
		mu.Lock()
		defer mu.Unlock()
		if !lastAt.IsZero() && time.Since(lastAt) < ttl {
			return last
		}
		resp, err := c.Validate(ctx, req)
		if err == nil {
			last, lastAt = LicenseInfoFromValidation(resp), time.Now()
			return last
		}
		if !lastAt.IsZero() && time.Since(lastAt) < maxStale {
			return last
		}
		return LicenseInfo{Code: "UNAVAILABLE", Detail: "licensd could not confirm the license: " + err.Error()}
	})
}

type licenseInfoKey struct{}

// LicenseFromContext is the LicenseInfo a gate let through, inside the handler it guards.
func LicenseFromContext(ctx context.Context) (LicenseInfo, bool) {
	info, ok := ctx.Value(licenseInfoKey{}).(LicenseInfo)
	return info, ok
}

// licenseRequired is the JSON body of a refusal (HenKaiPan's shape, plus the code).
type licenseRequired struct {
	Error   string `json:"error"`
	Feature string `json:"feature,omitempty"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// RequireLicense is net/http middleware that lets requests through only while src says
// the license is valid; otherwise it answers 402 Payment Required with
// {"error":"license_required","code":…,"message":…}.
func RequireLicense(src LicenseSource) func(http.Handler) http.Handler {
	return gate(src, "")
}

// RequireFeature is RequireLicense for one feature: 402 (with "feature") when there is no
// valid license, 403 Forbidden when the license is valid but does not grant the feature
// (a plan that does not include it: an upgrade, not a first purchase).
func RequireFeature(src LicenseSource, feature string) func(http.Handler) http.Handler {
	return gate(src, feature)
}

func gate(src LicenseSource, feature string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			info := src.LicenseInfo(r.Context())
			switch {
			case !info.Valid:
				msg := "this needs a valid license"
				if feature != "" {
					msg = "the feature " + feature + " needs a valid license"
				}
				if info.Detail != "" {
					msg += " (" + info.Detail + ")"
				}
				refuse(w, http.StatusPaymentRequired, licenseRequired{"license_required", feature, info.Code, msg})
			case feature != "" && !info.HasFeature(feature):
				plan := "the license"
				if info.Tier != "" {
					plan = "the " + info.Tier + " plan"
				}
				refuse(w, http.StatusForbidden, licenseRequired{"license_required", feature, "FEATURE_NOT_LICENSED",
					plan + " does not include the feature " + feature})
			default:
				next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), licenseInfoKey{}, info)))
			}
		})
	}
}

func refuse(w http.ResponseWriter, status int, body licenseRequired) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}
