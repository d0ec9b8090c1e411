// A Go program that validates a license key online, verifies the signed answer (Ed25519,
// with a fresh nonce so a recorded answer cannot be replayed), then asks for a license
// file bound to this machine and verifies it offline, as an air-gapped product would.
//
//	LICENSD_URL=http://127.0.0.1:8080 LICENSD_API_KEY=lsk_… LICENSD_LICENSE_KEY=PRD-… go run ./examples/go
//
// (Inside this repository, offline: bash scripts/check-go.sh build -o /tmp/example licensd.dev/example-go.)
package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"time"

	licensingv1 "licensd.dev/client/gen/licensd/licensing/v1"
	"licensd.dev/client/licensd"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	u, err := url.Parse(os.Getenv("LICENSD_URL"))
	if err != nil || u.Host == "" {
		fail("set LICENSD_URL, e.g. http://127.0.0.1:8080")
	}
	opts := []licensd.Option{licensd.WithAPIKey(os.Getenv("LICENSD_API_KEY"))}
	if u.Scheme == "http" {
		opts = append(opts, licensd.WithInsecure()) // h2c to a licensd on loopback
	}
	c, err := licensd.Dial(ctx, u.Host, opts...)
	if err != nil {
		fail(err.Error())
	}
	defer c.Close()
	key := os.Getenv("LICENSD_LICENSE_KEY")

	// Online: Validate sends a fresh nonce and verifies the signed answer before returning it.
	resp, err := c.Validate(ctx, &licensingv1.ValidateLicenseRequest{Key: key, Entitlements: []string{"reports"}})
	if err != nil {
		fail("validate: " + err.Error())
	}
	info := licensd.LicenseInfoFromValidation(resp)
	fmt.Printf("validated: signature ok, valid=%v code=%s tier=%s reports=%v\n",
		info.Valid, resp.GetCode(), info.Tier, info.HasFeature("reports"))

	// Offline: a license file for this machine (the vendor issues it: API key), then checked
	// with the published keys only.
	file, err := c.Licensing.IssueLicenseFile(ctx, &licensingv1.IssueLicenseFileRequest{
		LicenseId: resp.GetLicense().GetId(), Fingerprint: "go-example-host"})
	if err != nil {
		if e := licensd.ErrorOf(err); e != nil {
			fail(fmt.Sprintf("issue license file: %s (reason %s)", e.Message, e.Reason))
		}
		fail(err.Error())
	}
	keys, err := c.SigningKeys.KeysFor(ctx, file.GetKid())
	if err != nil {
		fail(err.Error())
	}
	r := licensd.VerifyLicenseFile(file.GetLicenseFile(), licensd.LicenseFileOptions{
		Keys: keys, Fingerprint: "go-example-host", LicenseKey: key})
	fmt.Printf("license file: %s (reports=%v)\n", r.Code, r.HasFeature("reports"))
	other := licensd.VerifyLicenseFile(file.GetLicenseFile(), licensd.LicenseFileOptions{
		Keys: keys, Fingerprint: "another-host", LicenseKey: key})
	fmt.Printf("on another machine: %s\n", other.Code)

	// Bad input: the reason and the field, from google.rpc details.
	_, err = c.Licensing.ValidateLicense(ctx, &licensingv1.ValidateLicenseRequest{Key: ""})
	if e := licensd.ErrorOf(err); e != nil {
		fmt.Printf("refused: %s reason=%s field=%s\n", e.Code, e.Reason, e.Field())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "go example:", msg)
	os.Exit(2)
}
