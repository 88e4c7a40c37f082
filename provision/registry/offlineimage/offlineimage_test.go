package offlineimage_test

import (
	"archive/tar"
	"io"
	"os"
	"runtime"
	"testing"

	"github.com/kindlab/kindlab/provision/registry/offlineimage"
	"github.com/kindlab/kindlab/provision/registry/registrytest"
)

func TestBuild(t *testing.T) {
	if _, err := os.Stat(offlineimage.DefaultBinary); err != nil {
		registrytest.SkipOrFail(t, offlineimage.DefaultBinary+" not installed (apt-get install docker-registry)")
	}
	a, err := offlineimage.Build("")
	if err != nil {
		t.Fatal(err)
	}
	b, err := offlineimage.Build("")
	if err != nil {
		t.Fatal(err)
	}
	da, _ := a.Digest()
	db, _ := b.Digest()
	if da != db {
		t.Errorf("two builds of the same binary: %s and %s", da, db)
	}
	cf, err := a.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if len(cf.Config.Entrypoint) == 0 || cf.Config.Entrypoint[0] != "/bin/registry" || cf.Config.Labels[offlineimage.LabelSource] == "" {
		t.Errorf("config %+v", cf.Config)
	}
	layers, _ := a.Layers()
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files := map[string]bool{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = true
	}
	wants := []string{"bin/registry", "etc/docker/registry/config.yml", "var/lib/registry/", "tmp/"}
	if runtime.GOARCH == "amd64" {
		// Debian's binary links libc dynamically: the image needs the loader too.
		wants = append(wants, "lib64/ld-linux-x86-64.so.2", "lib/x86_64-linux-gnu/libc.so.6")
	}
	for _, want := range wants {
		if !files[want] {
			t.Errorf("image lacks %s (has %v)", want, files)
		}
	}

	if _, err := offlineimage.Build("/nonexistent/registry"); err == nil {
		t.Error("Build of a missing binary succeeded")
	}
}
