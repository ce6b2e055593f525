//go:build race

package imapfmt

// raceSlowdown is how much the race detector slows the code down, for the time limits of tests.
const raceSlowdown = 10
