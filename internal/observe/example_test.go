package observe_test

import (
	"encoding/json"
	"fmt"

	"github.com/smimeproxy/smimeproxy/internal/observe"
)

func ExampleSecret() {
	token := observe.Secret("hvs.CAESIJ")
	fmt.Println(token)
	fmt.Printf("%q %v\n", token, struct{ Token observe.Secret }{token})
	j, _ := json.Marshal(map[string]any{"token": token})
	fmt.Println(string(j))
	fmt.Println(len(token.Reveal()))
	// Output:
	// ***
	// "***" {***}
	// {"token":"***"}
	// 10
}

func ExampleMetrics_nil() {
	var m *observe.Metrics // metrics disabled
	m.Decrypted()          // no-op, no panic
	fmt.Println(m.Registry() == nil)
	// Output: true
}
