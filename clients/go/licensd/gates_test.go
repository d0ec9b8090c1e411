package licensd

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"google.golang.org/protobuf/proto"

	licensingv1 "licensd.dev/client/gen/licensd/licensing/v1"
)

// fileInfo is the LicenseInfo of the vectors' license file case named name, verified at
// the case's own time (so the test does not age).
func fileInfo(t *testing.T, name string, fingerprint string) LicenseInfo {
	t.Helper()
	v := loadVectors(t)
	for _, c := range v.LicenseFiles.Cases {
		if c.Name == name {
			return LicenseInfoFromFile(VerifyLicenseFile(c.File, LicenseFileOptions{
				Keys: v.keys(t, c.Keys), Fingerprint: fingerprint, Now: mustTime(t, c.Now),
			}))
		}
	}
	t.Fatalf("no license file case %q", name)
	return LicenseInfo{}
}

type answer struct {
	status int
	body   map[string]interface{}
	seen   *LicenseInfo
}

func serve(t *testing.T, mw func(http.Handler) http.Handler) answer {
	t.Helper()
	var seen *LicenseInfo
	h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info, ok := LicenseFromContext(r.Context())
		if !ok {
			t.Error("the handler got no LicenseInfo in its context")
		}
		seen = &info
		_, _ = w.Write([]byte(`{"report":"ok"}`))
	}))
	srv := httptest.NewServer(h)
	defer srv.Close()
	res, err := http.Get(srv.URL + "/reports")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var body map[string]interface{}
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 && res.Header.Get("Content-Type") != "application/json" {
		t.Errorf("refusal content type %q", res.Header.Get("Content-Type"))
	}
	return answer{res.StatusCode, body, seen}
}

func TestRequireLicenseLetsAValidLicenseThrough(t *testing.T) {
	info := fileInfo(t, "Ed25519 file", "")
	if !info.Valid || info.Code != "VALID" || info.Tier != "pro" || info.ExpiresAt == nil || info.LicenseID == "" {
		t.Fatalf("license info of a valid file: %+v", info)
	}
	a := serve(t, RequireLicense(StaticLicense(info)))
	if a.status != 200 || a.body["report"] != "ok" || a.seen == nil || a.seen.Tier != "pro" {
		t.Fatalf("%d %v", a.status, a.body)
	}
}

func TestRequireLicenseRefusesAnExpiredFileWith402(t *testing.T) {
	info := fileInfo(t, "past the license's expiry", "")
	if info.Valid || info.Code != CodeExpired {
		t.Fatalf("%+v", info)
	}
	a := serve(t, RequireLicense(StaticLicense(info)))
	if a.status != http.StatusPaymentRequired || a.body["error"] != "license_required" || a.body["code"] != "EXPIRED" || a.seen != nil {
		t.Fatalf("%d %v", a.status, a.body)
	}
	if _, has := a.body["feature"]; has {
		t.Errorf("RequireLicense names no feature: %v", a.body)
	}
}

func TestRequireFeature(t *testing.T) {
	valid := fileInfo(t, "Ed25519 file", "")
	if a := serve(t, RequireFeature(StaticLicense(valid), "reports")); a.status != 200 {
		t.Errorf("granted feature: %d %v", a.status, a.body)
	}
	// The file's entitlements hold export=false: the feature is not granted.
	a := serve(t, RequireFeature(StaticLicense(valid), "export"))
	if a.status != http.StatusForbidden || a.body["error"] != "license_required" || a.body["feature"] != "export" || a.body["code"] != "FEATURE_NOT_LICENSED" {
		t.Errorf("feature outside the plan: %d %v", a.status, a.body)
	}
	a = serve(t, RequireFeature(StaticLicense(NoLicense("no license key configured")), "reports"))
	if a.status != http.StatusPaymentRequired || a.body["feature"] != "reports" || a.body["code"] != "NO_LICENSE" {
		t.Errorf("no license: %d %v", a.status, a.body)
	}
	// A file bound to another machine grants nothing here.
	bound := fileInfo(t, "bound to this machine", "someone-elses-laptop")
	if a := serve(t, RequireFeature(StaticLicense(bound), "reports")); a.status != http.StatusPaymentRequired || a.body["code"] != CodeFingerprintMismatch {
		t.Errorf("bound elsewhere: %d %v", a.status, a.body)
	}
}

func TestLicenseFileSource(t *testing.T) {
	v := loadVectors(t)
	c := v.LicenseFiles.Cases[1] // perpetual: valid whenever the test runs
	info := LicenseFile(c.File, LicenseFileOptions{Keys: v.keys(t, c.Keys)}).LicenseInfo(context.Background())
	if !info.Valid || info.ExpiresAt != nil || !info.HasFeature("reports") || info.HasFeature("export") {
		t.Fatalf("perpetual file: %+v", info)
	}
	info = LicenseFile(c.File, LicenseFileOptions{}).LicenseInfo(context.Background())
	if info.Valid || info.Code != CodeUnknownKey || info.HasFeature("reports") {
		t.Fatalf("no keys: %+v", info)
	}
}

func TestLicenseInfoFromValidation(t *testing.T) {
	v := loadVectors(t)
	read := func(name string) LicenseInfo {
		raw, _ := base64.StdEncoding.DecodeString(v.ValidateLicense.Answers[name].ResponseBinaryBase64)
		var resp licensingv1.ValidateLicenseResponse
		if err := proto.Unmarshal(raw, &resp); err != nil {
			t.Fatal(err)
		}
		return LicenseInfoFromValidation(&resp)
	}
	ok := read("valid_on_machine")
	if !ok.Valid || ok.Code != "VALID" || ok.Tier == "" || !ok.HasFeature("reports") || ok.LicenseID == "" || ok.InGrace {
		t.Errorf("valid answer: %+v", ok)
	}
	s := read("suspended")
	if s.Valid || s.Code != "SUSPENDED" || s.HasFeature("reports") || s.Detail == "" {
		t.Errorf("suspended answer: %+v", s)
	}
}

func TestLicenseInfoFromValidationUserScope(t *testing.T) {
	for code, want := range map[licensingv1.ValidationCode]string{
		licensingv1.ValidationCode_VALIDATION_CODE_USER_SCOPE_REQUIRED: "USER_SCOPE_REQUIRED",
		licensingv1.ValidationCode_VALIDATION_CODE_USER_SCOPE_MISMATCH: "USER_SCOPE_MISMATCH",
		licensingv1.ValidationCode_VALIDATION_CODE_TOO_MANY_PROCESSES:  "TOO_MANY_PROCESSES",
	} {
		info := LicenseInfoFromValidation(&licensingv1.ValidateLicenseResponse{Code: code, Detail: "user"})
		if info.Valid || info.Code != want || info.HasFeature("reports") {
			t.Errorf("%v: %+v", code, info)
		}
	}
	req := &licensingv1.ValidateLicenseRequest{Key: "k", User: "ada@example.com"}
	if req.GetUser() != "ada@example.com" {
		t.Errorf("user: %q", req.GetUser())
	}
}

func TestLicenseInfoFromValidationTooManyCores(t *testing.T) {
	info := LicenseInfoFromValidation(&licensingv1.ValidateLicenseResponse{
		Code:   licensingv1.ValidationCode_VALIDATION_CODE_TOO_MANY_CORES,
		Detail: "the license's machines report 10 cores; the license allows 8",
	})
	if info.Valid || info.Code != "TOO_MANY_CORES" || info.HasFeature("reports") || info.Detail == "" {
		t.Errorf("too many cores: %+v", info)
	}
	if licensingv1.ValidationCode_VALIDATION_CODE_TOO_MANY_CORES != 19 {
		t.Errorf("TOO_MANY_CORES is %d", licensingv1.ValidationCode_VALIDATION_CODE_TOO_MANY_CORES)
	}
	p := &licensingv1.Policy{
		MachineUniquenessScope: licensingv1.MachineUniquenessScope_MACHINE_UNIQUENESS_SCOPE_PRODUCT,
		MaxCores:               16,
	}
	if p.GetMachineUniquenessScope().String() != "MACHINE_UNIQUENESS_SCOPE_PRODUCT" || p.GetMaxCores() != 16 {
		t.Errorf("policy: %v", p)
	}
}

func TestLicenseInfoFromValidationComponentsScope(t *testing.T) {
	for code, want := range map[licensingv1.ValidationCode]string{
		licensingv1.ValidationCode_VALIDATION_CODE_COMPONENTS_SCOPE_MISMATCH: "COMPONENTS_SCOPE_MISMATCH",
		licensingv1.ValidationCode_VALIDATION_CODE_COMPONENTS_SCOPE_REQUIRED: "COMPONENTS_SCOPE_REQUIRED",
	} {
		info := LicenseInfoFromValidation(&licensingv1.ValidateLicenseResponse{Code: code, Detail: "components"})
		if info.Valid || info.Code != want || info.HasFeature("reports") {
			t.Errorf("%v: %+v", code, info)
		}
	}
	req := &licensingv1.ValidateLicenseRequest{
		Key:         "k",
		Fingerprint: "fp",
		Components:  []*licensingv1.Component{{Name: "disk", Fingerprint: "d-1"}},
	}
	if got := req.GetComponents(); len(got) != 1 || got[0].GetName() != "disk" || got[0].GetFingerprint() != "d-1" {
		t.Errorf("components: %v", got)
	}
}
