// Command e2eclient drives a live licensd through the Go client the way a product's code
// would, and prints what it saw as JSON for test/e2e/go-client.test.ts to check. It is a
// test program, not an example to copy: each step stops at the first surprise.
//
//	e2eclient ADDR                      (LICENSD_API_KEY: a tenant admin key)
//	e2eclient agent ADDR DIR KEY N      records N events into the spool DIR (none if N is 0),
//	                                    then uploads the spool and prints each ack as a line
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	activationv1 "licensd.dev/client/gen/licensd/activation/v1"
	auditv1 "licensd.dev/client/gen/licensd/audit/v1"
	licensingv1 "licensd.dev/client/gen/licensd/licensing/v1"
	tenantv1 "licensd.dev/client/gen/licensd/tenant/v1"
	usagev1 "licensd.dev/client/gen/licensd/usage/v1"
	"licensd.dev/client/licensd"
)

type report map[string]interface{}

func main() {
	if os.Args[1] == "agent" {
		if err := agent(os.Args[2], os.Args[3], os.Args[4], os.Args[5]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	out := report{}
	err := run(os.Args[1], os.Getenv("LICENSD_API_KEY"), out)
	if err != nil {
		out["failed"] = err.Error()
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	_ = enc.Encode(out)
	if err != nil {
		os.Exit(1)
	}
}

// refusal is what a user reads off a failed call.
func refusal(err error) report {
	e := licensd.ErrorOf(err)
	var violations []string
	for _, v := range e.FieldViolations {
		violations = append(violations, v.Field+": "+v.Description)
	}
	var asError *licensd.Error
	return report{
		"code": e.Code.String(), "reason": e.Reason, "domain": e.Domain, "field": e.Field(),
		"violations": violations, "errors_as": errors.As(err, &asError),
	}
}

func run(addr, apiKey string, out report) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := licensd.Dial(ctx, addr, licensd.WithInsecure(), licensd.WithAPIKey(apiKey), licensd.WithTimeout(20*time.Second))
	if err != nil {
		return err
	}
	defer c.Close()

	// Catalogue and a license, with the tenant's admin key.
	product, err := c.Licensing.CreateProduct(ctx, &licensingv1.CreateProductRequest{
		Code: "GOC", Name: "Go client — ünïcödé",
		Features: []*licensingv1.FeatureDefinition{
			{Name: "reports", Kind: licensingv1.FeatureKind_FEATURE_KIND_FLAG, Compose: licensingv1.ComposeStrategy_COMPOSE_STRATEGY_UNION},
			{Name: "export", Kind: licensingv1.FeatureKind_FEATURE_KIND_FLAG, Compose: licensingv1.ComposeStrategy_COMPOSE_STRATEGY_UNION},
			{Name: "seats", Kind: licensingv1.FeatureKind_FEATURE_KIND_LIMIT, Compose: licensingv1.ComposeStrategy_COMPOSE_STRATEGY_SUM},
		},
	})
	if err != nil {
		return fmt.Errorf("CreateProduct: %w", err)
	}
	policy, err := c.Licensing.CreatePolicy(ctx, &licensingv1.CreatePolicyRequest{
		ProductId: product.GetProduct().GetId(), Name: "pro", Floating: true, MaxMachines: 3,
		Entitlements: []*licensingv1.Entitlement{
			{Feature: "reports", Value: &licensingv1.Entitlement_Enabled{Enabled: true}},
			{Feature: "export", Value: &licensingv1.Entitlement_Enabled{Enabled: false}},
			{Feature: "seats", Value: &licensingv1.Entitlement_Limit{Limit: 5}},
		},
	})
	if err != nil {
		return fmt.Errorf("CreatePolicy: %w", err)
	}
	customer, err := c.Licensing.CreateCustomer(ctx, &licensingv1.CreateCustomerRequest{Name: "Zoë", Email: "zoe@example.com"})
	if err != nil {
		return fmt.Errorf("CreateCustomer: %w", err)
	}
	create := &licensingv1.CreateLicenseRequest{PolicyId: policy.GetPolicy().GetId(), CustomerId: customer.GetCustomer().GetId(), IdempotencyKey: "go-e2e-order-1"}
	created, err := c.Licensing.CreateLicense(ctx, create)
	if err != nil {
		return fmt.Errorf("CreateLicense: %w", err)
	}
	again, err := c.Licensing.CreateLicense(ctx, proto.Clone(create).(*licensingv1.CreateLicenseRequest))
	if err != nil {
		return fmt.Errorf("CreateLicense again: %w", err)
	}
	key, licenseID := created.GetKey(), created.GetLicense().GetId()
	out["license"] = report{"id": licenseID, "key": key, "same_on_retry": again.GetLicense().GetId() == licenseID && again.GetKey() == key}

	// Online validation: signed, with a fresh nonce, verified against the published keys.
	valid, err := c.Validate(ctx, &licensingv1.ValidateLicenseRequest{Key: key, Entitlements: []string{"reports"}})
	if err != nil {
		return fmt.Errorf("Validate: %w", err)
	}
	info := licensd.LicenseInfoFromValidation(valid)
	keys, err := c.SigningKeys.KeysFor(ctx, valid.GetKid())
	if err != nil {
		return err
	}
	out["validate"] = report{
		"valid": info.Valid, "code": info.Code, "features": info.Features, "tier": info.Tier, "kid": valid.GetKid(),
		"nonce_echoed": valid.GetNonce() != "",
		// A recorded answer replayed to a client that sent another nonce.
		"replay_refused": errors.Is(licensd.VerifyValidationResponse(valid, keys, "another-nonce"), licensd.ErrNonceMismatch),
		// An answer altered in transit.
		"tamper_refused": func() bool {
			forged := proto.Clone(valid).(*licensingv1.ValidateLicenseResponse)
			forged.Features = append(forged.Features, "export")
			return errors.Is(licensd.VerifyValidationResponse(forged, keys, valid.GetNonce()), licensd.ErrBadSignature)
		}(),
	}
	unknown, err := c.Validate(ctx, &licensingv1.ValidateLicenseRequest{Key: "go-e2e.no-such-license-key"})
	if err != nil {
		return fmt.Errorf("Validate (unknown key): %w", err)
	}
	out["validate_unknown"] = report{"valid": unknown.GetValid(), "code": licensd.LicenseInfoFromValidation(unknown).Code}

	// A license file, verified offline; tampered, bound elsewhere, encrypted.
	file, err := c.Licensing.IssueLicenseFile(ctx, &licensingv1.IssueLicenseFileRequest{LicenseId: licenseID, Format: licensingv1.LicenseFileFormat_LICENSE_FILE_FORMAT_ED25519})
	if err != nil {
		return fmt.Errorf("IssueLicenseFile: %w", err)
	}
	// Kept for licensd-check -file (files on disk end with a newline, as licensd writes them).
	if path := os.Getenv("LICENSE_FILE_OUT"); path != "" {
		if err := os.WriteFile(path, []byte(file.GetLicenseFile()+"\n"), 0o600); err != nil {
			return err
		}
	}
	keys, err = c.SigningKeys.KeysFor(ctx, file.GetKid())
	if err != nil {
		return err
	}
	verified := licensd.VerifyLicenseFile(file.GetLicenseFile(), licensd.LicenseFileOptions{Keys: keys})
	// The customer edits the plan inside the file, keeping licensd's signature.
	parts := strings.Split(file.GetLicenseFile(), ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return err
	}
	edited := strings.Replace(string(payload), `"plan":"pro"`, `"plan":"enterprise"`, 1)
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(edited)) + "." + parts[2]
	bound, err := c.Licensing.IssueLicenseFile(ctx, &licensingv1.IssueLicenseFileRequest{LicenseId: licenseID, Fingerprint: "go-host", Format: licensingv1.LicenseFileFormat_LICENSE_FILE_FORMAT_ED25519})
	if err != nil {
		return fmt.Errorf("IssueLicenseFile (bound): %w", err)
	}
	encrypted, err := c.Licensing.IssueLicenseFile(ctx, &licensingv1.IssueLicenseFileRequest{LicenseId: licenseID, Encrypt: true, Format: licensingv1.LicenseFileFormat_LICENSE_FILE_FORMAT_ED25519})
	if err != nil {
		return fmt.Errorf("IssueLicenseFile (encrypted): %w", err)
	}
	out["license_file"] = report{
		"code": verified.Code, "license_id": verified.Claims.LicenseID, "plan": verified.Claims.Plan, "features": verified.Claims.Features,
		"tampered":         licensd.VerifyLicenseFile(tampered, licensd.LicenseFileOptions{Keys: keys}).Code,
		"bound_here":       licensd.VerifyLicenseFile(bound.GetLicenseFile(), licensd.LicenseFileOptions{Keys: keys, Fingerprint: "go-host"}).Code,
		"bound_elsewhere":  licensd.VerifyLicenseFile(bound.GetLicenseFile(), licensd.LicenseFileOptions{Keys: keys, Fingerprint: "other-host"}).Code,
		"encrypted":        licensd.VerifyLicenseFile(encrypted.GetLicenseFile(), licensd.LicenseFileOptions{Keys: keys, LicenseKey: strings.ToLower(key)}).Code,
		"encrypted_no_key": licensd.VerifyLicenseFile(encrypted.GetLicenseFile(), licensd.LicenseFileOptions{Keys: keys}).Code,
	}

	// Activation (public: the license key is the credential) and its lease.
	activated, err := c.Activation.Activate(ctx, &activationv1.ActivateRequest{Key: key, Fingerprint: "go-host", Hostname: "go-e2e"})
	if err != nil {
		return fmt.Errorf("Activate: %w", err)
	}
	keys, _ = c.SigningKeys.KeysFor(ctx, activated.GetLease().GetKid())
	lease := licensd.VerifyLease(activated.GetLease().GetToken(), keys, "go-host", time.Time{})
	out["lease"] = report{
		"code": lease.Code, "machine_id": lease.Claims.MachineID,
		"other_machine": licensd.VerifyLease(activated.GetLease().GetToken(), keys, "other-host", time.Time{}).Code,
	}

	// An air-gapped machine: a request file, answered by the vendor with ActivateOffline;
	// the response is an offline lease the machine checks itself.
	request, err := licensd.NewOfflineActivationRequest(licensd.OfflineActivation{LicenseKey: strings.ToLower(key), Fingerprint: "vault-go", Hostname: "vault", Cores: 4})
	if err != nil {
		return err
	}
	offline, err := c.Activation.ActivateOffline(ctx, &activationv1.ActivateOfflineRequest{Request: request})
	if err != nil {
		return fmt.Errorf("ActivateOffline: %w", err)
	}
	keys, _ = c.SigningKeys.KeysFor(ctx, offline.GetLease().GetKid())
	offlineLease := licensd.VerifyLease(offline.GetLease().GetToken()+"\n", keys, "vault-go", time.Time{})
	out["offline_activation"] = report{
		"request_check": licensd.CheckOfflineActivationRequest(request, key),
		"lease":         offlineLease.Code, "offline": offlineLease.Claims.Offline,
	}

	// Refusals, as a user reads them.
	_, err = c.Licensing.CreateProduct(ctx, &licensingv1.CreateProductRequest{Code: "bad code", Name: ""})
	out["bad_input"] = refusal(err)
	_, err = c.Licensing.GetLicense(ctx, &licensingv1.GetLicenseRequest{Id: "lic_00000000000000000000000000"})
	out["not_found"] = refusal(err)
	anonymous, err := licensd.Dial(ctx, addr, licensd.WithInsecure())
	if err != nil {
		return err
	}
	defer anonymous.Close()
	_, err = anonymous.Tenants.ListApiKeys(ctx, &tenantv1.ListApiKeysRequest{})
	out["no_api_key"] = refusal(err)
	wrong, err := licensd.Dial(ctx, addr, licensd.WithInsecure(), licensd.WithAPIKey("lsk_not-a-key-that-exists"))
	if err != nil {
		return err
	}
	defer wrong.Close()
	_, err = wrong.Tenants.ListApiKeys(ctx, &tenantv1.ListApiKeysRequest{})
	out["wrong_api_key"] = refusal(err)

	// Gates: net/http middleware over the online license state.
	src := licensd.OnlineLicense(c, &licensingv1.ValidateLicenseRequest{Key: key}, time.Minute, time.Hour)
	out["gate"] = report{
		"reports": gateStatus(licensd.RequireFeature(src, "reports")),
		"export":  gateStatus(licensd.RequireFeature(src, "export")),
	}

	// The audit log: an entry proved to be in a signed checkpoint, then the log proved to
	// have only grown after one more change.
	cp1, err := c.Audit.GetCheckpoint(ctx, &auditv1.GetCheckpointRequest{})
	if err != nil {
		return fmt.Errorf("GetCheckpoint: %w", err)
	}
	events, err := c.Audit.ListAuditEvents(ctx, &auditv1.ListAuditEventsRequest{PageSize: 1000})
	if err != nil {
		return fmt.Errorf("ListAuditEvents: %w", err)
	}
	var entry *auditv1.AuditEvent
	for _, e := range events.GetEvents() {
		if e.GetType() == "license.created" {
			entry = e
		}
	}
	if entry == nil {
		return errors.New("no license.created entry in the audit log")
	}
	inclusion, err := c.Audit.GetInclusionProof(ctx, &auditv1.GetInclusionProofRequest{Seq: entry.GetSeq(), TreeSize: cp1.GetCheckpoint().GetTreeSize()})
	if err != nil {
		return fmt.Errorf("GetInclusionProof: %w", err)
	}
	if _, err := c.Licensing.SuspendLicense(ctx, &licensingv1.SuspendLicenseRequest{Id: licenseID}); err != nil {
		return fmt.Errorf("SuspendLicense: %w", err)
	}
	cp2, err := c.Audit.GetCheckpoint(ctx, &auditv1.GetCheckpointRequest{})
	if err != nil {
		return err
	}
	consistency, err := c.Audit.GetConsistencyProof(ctx, &auditv1.GetConsistencyProofRequest{OldSize: cp1.GetCheckpoint().GetTreeSize(), NewSize: cp2.GetCheckpoint().GetTreeSize()})
	if err != nil {
		return fmt.Errorf("GetConsistencyProof: %w", err)
	}
	keys, err = c.SigningKeys.KeysFor(ctx, cp1.GetCheckpoint().GetKid(), cp2.GetCheckpoint().GetKid())
	if err != nil {
		return err
	}
	forgedEntry := proto.Clone(entry).(*auditv1.AuditEvent)
	forgedEntry.Actor = "system"
	errText := func(err error) string {
		if err == nil {
			return "ok"
		}
		return err.Error()
	}
	out["audit"] = report{
		"entry_seq": entry.GetSeq(), "tree_size_before": cp1.GetCheckpoint().GetTreeSize(), "tree_size_after": cp2.GetCheckpoint().GetTreeSize(),
		"inclusion":     errText(licensd.VerifyAuditProof(licensd.AuditProof{Checkpoint: cp1.GetCheckpoint(), Entry: entry, Inclusion: inclusion}, keys)),
		"consistency":   errText(licensd.VerifyAuditProof(licensd.AuditProof{Checkpoint: cp2.GetCheckpoint(), Previous: cp1.GetCheckpoint(), Consistency: consistency}, keys)),
		"altered_entry": errText(licensd.VerifyAuditProof(licensd.AuditProof{Checkpoint: cp1.GetCheckpoint(), Entry: forgedEntry, Inclusion: inclusion}, keys)),
		"swapped_roots": errText(licensd.VerifyAuditProof(licensd.AuditProof{Checkpoint: cp1.GetCheckpoint(), Previous: cp2.GetCheckpoint(), Consistency: consistency}, keys)),
	}

	// After the suspension: validation says so (a normal, signed answer), and a fresh gate
	// refuses with 402.
	suspended, err := c.Validate(ctx, &licensingv1.ValidateLicenseRequest{Key: key})
	if err != nil {
		return fmt.Errorf("Validate (suspended): %w", err)
	}
	after := licensd.OnlineLicense(c, &licensingv1.ValidateLicenseRequest{Key: key}, time.Minute, time.Hour)
	out["suspended"] = report{
		"valid": suspended.GetValid(), "code": licensd.LicenseInfoFromValidation(suspended).Code,
		"gate": gateStatus(licensd.RequireFeature(after, "reports")),
	}
	return nil
}

// gateStatus is the HTTP status and body a request through the gate gets.
func gateStatus(gate func(http.Handler) http.Handler) report {
	srv := httptest.NewServer(gate(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info, _ := licensd.LicenseFromContext(r.Context())
		_ = json.NewEncoder(w).Encode(map[string]string{"ok": "yes", "tier": info.Tier})
	})))
	defer srv.Close()
	res, err := http.Get(srv.URL)
	if err != nil {
		return report{"error": err.Error()}
	}
	defer res.Body.Close()
	var body map[string]interface{}
	_ = json.NewDecoder(res.Body).Decode(&body)
	return report{"status": res.StatusCode, "body": body}
}

// agent is a usage agent: it records, then uploads; the e2e test kills it mid-upload and
// runs it again with N = 0 to drain what is left.
func agent(addr, dir, key, n string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c, err := licensd.Dial(ctx, addr, licensd.WithInsecure())
	if err != nil {
		return err
	}
	defer c.Close()
	out := json.NewEncoder(os.Stdout)
	u, err := licensd.NewUsageUploader(c, licensd.UsageUploaderOptions{
		Dir: dir, LicenseKey: key, BatchSize: 20, FlushInterval: 100 * time.Millisecond,
		OnAck: func(ack *usagev1.StreamUsageResponse) {
			_ = out.Encode(report{"ack": ack.GetBatchId(), "accepted": ack.GetAccepted(), "duplicates": ack.GetDuplicates(), "rejected": len(ack.GetRejected())})
		},
	})
	if err != nil {
		return err
	}
	_ = out.Encode(report{"pending_at_start": u.Pending()})
	var count int
	if _, err := fmt.Sscan(n, &count); err != nil {
		return err
	}
	for i := 0; i < count; i++ {
		if err := u.Record("tokens", 1, map[string]string{"i": fmt.Sprint(i)}); err != nil {
			return err
		}
	}
	_ = out.Encode(report{"recorded": count})
	done := make(chan error, 1)
	go func() { done <- u.Run(ctx) }()
	if err := u.Flush(ctx); err != nil {
		return err
	}
	cancel()
	<-done
	_ = out.Encode(report{"drained": true, "pending": u.Pending()})
	return nil
}
