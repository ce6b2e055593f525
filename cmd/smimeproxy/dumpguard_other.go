//go:build !linux

package main

// disableCoreDumps is a no-op outside Linux: there the service manager (launchd, rc) must keep core dumps off.
func disableCoreDumps() error { return nil }
