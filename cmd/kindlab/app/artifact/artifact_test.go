package artifact_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/kindlab/kindlab/cmd/kindlab/app/artifact"
	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
	"github.com/kindlab/kindlab/provision/registry/registrytest"
)

const modelDir = "../../../../fixtures/image-volume/files/model"

func run(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	s := &cli.Streams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}
	code = cli.Execute(context.Background(), artifact.NewCommand(s), s, args)
	return out.String(), errOut.String(), code
}

func TestPushJSON(t *testing.T) {
	reg := registrytest.StartDistribution(t)
	ref := reg.Addr + "/kindlab/model:v1"
	args := []string{"push", modelDir, ref, "--artifact-type", "application/vnd.kindlab.model.v1",
		"--annotation", "org.opencontainers.image.title=kindlab example model", "-o", "json"}

	type result struct {
		Reference     string `json:"reference"`
		Digest        string `json:"digest"`
		Layers        int    `json:"layers"`
		BytesSent     int64  `json:"bytesSent"`
		BlobBytesSent int64  `json:"blobBytesSent"`
	}
	out, errOut, code := run(t, args...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var r1 result
	if err := json.Unmarshal([]byte(out), &r1); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, out)
	}
	if r1.Reference != ref || !strings.HasPrefix(r1.Digest, "sha256:") || r1.Layers != 1 || r1.BytesSent == 0 {
		t.Errorf("result %+v", r1)
	}
	if !strings.Contains(errOut, "pushing "+ref) {
		t.Errorf("no progress on stderr: %q", errOut)
	}
	got := strings.TrimSpace(string(registrytest.Skopeo(t, "inspect", "--tls-verify=false", "--format", "{{.Digest}}", "docker://"+ref)))
	if got != r1.Digest {
		t.Errorf("registry has %s, command printed %s", got, r1.Digest)
	}
	var ann struct {
		Annotations map[string]string `json:"annotations"`
	}
	_ = json.Unmarshal(registrytest.Skopeo(t, "inspect", "--tls-verify=false", "--raw", "docker://"+ref), &ann)
	if ann.Annotations["org.opencontainers.image.title"] != "kindlab example model" || ann.Annotations["dev.kindlab.artifact.type"] != "application/vnd.kindlab.model.v1" {
		t.Errorf("annotations %v", ann.Annotations)
	}

	out, _, code = run(t, append(args, "-q")...)
	var r2 result
	if err := json.Unmarshal([]byte(out), &r2); err != nil || code != 0 {
		t.Fatalf("second push: exit %d, %v\n%s", code, err, out)
	}
	if r2.Digest != r1.Digest || r2.BlobBytesSent != 0 {
		t.Errorf("re-push: %+v, want digest %s and no blob bytes", r2, r1.Digest)
	}

	out, _, code = run(t, "push", modelDir, ref, "-q")
	if code != 0 || !strings.HasPrefix(out, "pushed "+ref+"@sha256:") {
		t.Errorf("text output %q (exit %d)", out, code)
	}
}

func TestPushBadInput(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"annotation without =", []string{"push", modelDir, "localhost:5001/a/b:v1", "--annotation", "novalue"}, "--annotation"},
		{"reference", []string{"push", modelDir, "localhost:5001/A/b:v1"}, "reference"},
		{"missing dir", []string{"push", "./no-such-dir", "localhost:5001/a/b:v1"}, "does not exist"},
		{"artifact type", []string{"push", modelDir, "localhost:5001/a/b:v1", "--artifact-type", "model"}, "media type"},
		{"output", []string{"push", modelDir, "localhost:5001/a/b:v1", "-o", "yaml"}, "--output"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, errOut, code := run(t, tc.args...)
			if code != cli.ExitUsage || !strings.Contains(errOut, tc.want) || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
				t.Errorf("exit %d, stderr %q: want exit %d and one line mentioning %q", code, errOut, cli.ExitUsage, tc.want)
			}
		})
	}
}
