package config_test

import (
	"flag"
	"io"
	"strings"
	"testing"

	"github.com/smimeproxy/smimeproxy/internal/config"
)

// FuzzParse: any input either fails with a one-line "config: " error or parses into entries whose lines lie
// within the input, and validating and applying the result never panics.
func FuzzParse(f *testing.F) {
	for _, s := range []string{sample, "", "a = 1", "[serve]\nx = [1, 2]\n", "[global]\n[global.x]\n", "[[a]]\nb=1",
		"a = \"\"\"\nb = 2\n\"\"\"\nb = 3", "[keys.import]\n\"quoted.key\" = true\n", "x = 1979-05-27T07:32:00Z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data string) {
		file, err := config.Parse("f.toml", []byte(data))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "config: ") || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q is not a one-line config error", err)
			}
			return
		}
		lines := strings.Count(data, "\n") + 1
		for _, sec := range file.Sections() {
			for _, e := range file.Entries(sec) {
				if e.Line < 0 || e.Line > lines {
					t.Fatalf("entry %q line %d outside 1..%d", e.Key, e.Line, lines)
				}
			}
		}
		_, _ = file.Validate(config.Schema{Sections: map[string][]string{"serve": {"listen", "user"}}, Unchecked: []string{"keys"}})
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		fs.String("listen", "", "")
		fs.Int("user", 0, "")
		_ = fs.Parse(nil)
		_ = config.Apply(fs, func(string) string { return "" }, file)
	})
}
