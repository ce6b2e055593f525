package config_test

import (
	"flag"
	"fmt"

	"github.com/smimeproxy/smimeproxy/internal/config"
)

func ExampleApply() {
	f, _ := config.Parse("config.toml", []byte(`
upstream = "imaps://imap.example.org"
[serve]
listen = "127.0.0.1:1143"
`))
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:143", "")
	upstream := fs.String("upstream", "", "")
	vault := fs.String("vault-addr", "", "")
	_ = fs.Parse([]string{"--listen", "127.0.0.1:2143"})
	env := map[string]string{"SMIMEPROXY_VAULT_ADDR": "https://vault:8200"}
	_ = config.Apply(fs, func(k string) string { return env[k] }, f)
	fmt.Println(*listen, *upstream, *vault)
	// Output: 127.0.0.1:2143 imaps://imap.example.org https://vault:8200
}
