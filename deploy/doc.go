// Package deploy holds smimeproxy's deployment files, not Go code: the systemd user unit (systemd/), the
// docker-compose demo stack's Dovecot image and config (compose/; docker-compose.yml and Dockerfile are at the
// top of the repository). Its tests validate those files with the real tools: docker-compose config (through
// scripts/validate-compose.sh), doveconf and systemd-analyze verify.
package deploy
