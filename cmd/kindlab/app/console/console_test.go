package console

import (
	"bytes"
	"strings"
	"testing"

	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
)

// Flag mistakes are usage errors (exit 2, one line naming the flag), found
// before any engine is contacted or any port opened.
func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--listen", "8480"}, `--listen "8480": `},
		{[]string{"--listen", "0.0.0.0:http"}, `--listen "0.0.0.0:http": port "http" is not a number from 0 to 65535`},
		{[]string{"--listen", "0.0.0.0:70000"}, `port "70000" is not a number`},
		{[]string{"--listen", "lab.example.org:8480"}, `host "lab.example.org" is not an IP address`},
		{[]string{"--fleet", "Not_A_Name"}, `--fleet "Not_A_Name": `},
		{[]string{"-o", "yaml"}, `"yaml" is not a format`},
		{[]string{"extra"}, `unknown command "extra"`},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		cmd := NewCommand(&cli.Streams{In: strings.NewReader(""), Out: &out, ErrOut: &out})
		cmd.SetArgs(tt.args)
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		err := cmd.Execute()
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("console %v: %v, want one line containing %q", tt.args, err, tt.want)
			continue
		}
		if code := cli.CodeOf(err); code != cli.ExitUsage && tt.args[0] != "extra" {
			t.Errorf("console %v: exit %d, want %d", tt.args, code, cli.ExitUsage)
		}
	}
}

func TestAdvertiseHost(t *testing.T) {
	if got := advertiseHost("192.0.2.7"); got != "192.0.2.7" {
		t.Errorf("a given address: %s", got)
	}
	for _, any := range []string{"", "0.0.0.0", "::"} {
		if got := advertiseHost(any); got == "" || got == "0.0.0.0" || got == "::" {
			t.Errorf("advertiseHost(%q) = %q, want a reachable name or address", any, got)
		}
	}
}
