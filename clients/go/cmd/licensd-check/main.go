// Command licensd-check answers "may this product run, and with which features?" for a
// license key (validated online, the signed answer verified) or a license file (verified
// offline against licensd's published signing keys).
//
//	licensd-check -addr licensd.example.com:443 -key PRD-XXXXX-… [-fingerprint ID] [-feature reports]
//	licensd-check -addr 127.0.0.1:8080 -insecure -file license.lic [-fingerprint ID] [-feature reports]
//
// It prints the license state as JSON and exits 0 when the license is valid (and grants
// -feature), 1 when it is not, and 2 when licensd could not be asked or refused the request
// (the reason goes to stderr).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	licensingv1 "licensd.dev/client/gen/licensd/licensing/v1"
	"licensd.dev/client/licensd"
)

func main() {
	os.Exit(run())
}

func run() int {
	addr := flag.String("addr", envOr("LICENSD_ADDR", "127.0.0.1:8080"), "licensd's gRPC address (host:port)")
	insecure := flag.Bool("insecure", false, "plaintext HTTP/2, for a licensd on loopback")
	key := flag.String("key", os.Getenv("LICENSD_LICENSE_KEY"), "license key to validate online")
	file := flag.String("file", "", "license file to verify offline")
	fingerprint := flag.String("fingerprint", "", "this machine's fingerprint")
	feature := flag.String("feature", "", "a feature the license must grant")
	timeout := flag.Duration("timeout", 10*time.Second, "time allowed for licensd to answer")
	flag.Parse()
	if (*key == "") == (*file == "") {
		fmt.Fprintln(os.Stderr, "licensd-check: give exactly one of -key and -file")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	opts := []licensd.Option{}
	if *insecure {
		opts = append(opts, licensd.WithInsecure())
	}
	client, err := licensd.Dial(ctx, *addr, opts...)
	if err != nil {
		return fail(err)
	}
	defer client.Close()

	var info licensd.LicenseInfo
	if *key != "" {
		req := &licensingv1.ValidateLicenseRequest{Key: *key, Fingerprint: *fingerprint}
		if *feature != "" {
			req.Entitlements = []string{*feature}
		}
		resp, err := client.Validate(ctx, req)
		if err != nil {
			return fail(err)
		}
		info = licensd.LicenseInfoFromValidation(resp)
	} else {
		text, err := os.ReadFile(*file)
		if err != nil {
			return fail(err)
		}
		// The kid is read from the file only to know which key to make sure of; the
		// verifier itself trusts nothing in the file before its signature checks.
		licenseKey := os.Getenv("LICENSD_LICENSE_KEY") // opens an encrypted (licensd1e.) file
		keys, err := client.SigningKeys.KeysFor(ctx, kidOf(string(text), licenseKey))
		if keys == nil {
			return fail(err)
		}
		info = licensd.LicenseInfoFromFile(licensd.VerifyLicenseFile(string(text), licensd.LicenseFileOptions{
			Keys: keys, Fingerprint: *fingerprint, LicenseKey: licenseKey,
		}))
	}
	out := json.NewEncoder(os.Stdout)
	out.SetIndent("", "  ")
	_ = out.Encode(info)
	if !info.Valid || (*feature != "" && !info.HasFeature(*feature)) {
		return 1
	}
	return 0
}

// kidOf is the kid a license file names ("" when it cannot be read).
func kidOf(text, licenseKey string) string {
	r := licensd.VerifyLicenseFile(text, licensd.LicenseFileOptions{LicenseKey: licenseKey})
	if r.Claims == nil {
		return ""
	}
	return r.Claims.Kid
}

func fail(err error) int {
	e := licensd.ErrorOf(err)
	msg := fmt.Sprintf("licensd-check: %s", e.Code)
	if e.Reason != "" {
		msg += " " + e.Reason
	}
	msg += ": " + e.Message
	if f := e.Field(); f != "" {
		msg += " (field " + f + ")"
	}
	fmt.Fprintln(os.Stderr, msg)
	return 2
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}
