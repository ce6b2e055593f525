package main

import (
	"fmt"

	"github.com/smimeproxy/smimeproxy/submit"
)

// checkSubmission checks the submission upstream (serve --submission-upstream): reachable, TLS verified (or
// STARTTLS, or plaintext on loopback), and offering AUTH PLAIN or LOGIN, which the proxy relays.
func (d *doctorFlags) checkSubmission(r *doctorReport) {
	if d.submissionUpstream == "" {
		r.add(statusOK, "submission: not configured (no signing or encryption of outgoing mail)", "")
		return
	}
	if _, err := submit.ParseURL(d.submissionUpstream); err != nil {
		r.add(statusFail, err.Error(), "write the submission upstream as smtps://host[:465] or smtp://host[:587]")
		return
	}
	err := submit.Probe(submit.Options{Upstream: d.submissionUpstream, CAFile: d.upstreamCA, DialTimeout: d.timeout})
	if err != nil {
		r.add(statusFail, fmt.Sprintf("submission upstream %s: %v", d.submissionUpstream, oneLine(err.Error())),
			"check the host, port and scheme (smtps:// for port 465, smtp:// with STARTTLS for 587) and --upstream-ca-file")
		return
	}
	r.add(statusOK, fmt.Sprintf("submission upstream %s: reachable, TLS verified or loopback, AUTH PLAIN/LOGIN offered", d.submissionUpstream), "")
}
