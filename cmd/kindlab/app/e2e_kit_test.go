package app_test

import (
	"archive/tar"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type kitEntry struct {
	Role, Name, Reference, Digest string
	ImageIDs                      map[string]string
}

// e2eKit makes the end-to-end run come in through an offline kit: the kit
// is saved from the offline-built images (node and registry images in
// Docker, workload images in the local registry), the engine and the
// registry are emptied of all of it, a tampered copy is refused with
// nothing loaded, and the kit is loaded back. What `up` then runs is only
// what the kit carried. KINDLAB_E2E_KIT names the kit file; without it
// the run uses the images as they are.
func e2eKit(t *testing.T, img string) {
	t.Helper()
	file := os.Getenv("KINDLAB_E2E_KIT")
	if file == "" {
		t.Log("KINDLAB_E2E_KIT unset: not going through an offline kit")
		return
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		t.Fatal(err)
	}
	// The workload images are in the local registry (make offline-images
	// pushed them). An earlier test's down may have removed the registry's
	// container, keeping its data volume: `registry up` starts it again on
	// that volume, as a user would.
	if code, _, errOut := run(t, "registry", "up"); code != 0 {
		t.Fatalf("registry up: exit %d\n%s", code, errOut)
	}
	start := time.Now()
	code, _, errOut := run(t, "kit", "save", "all-features", "--image", img, "-o", file)
	if code != 0 {
		t.Fatalf("kit save: exit %d\n%s", code, errOut)
	}
	t.Logf("kit save took %s: %s", time.Since(start).Round(100*time.Millisecond), lastLine(errOut))
	code, out, errOut := run(t, "kit", "inspect", file, "-o", "json")
	var man struct {
		Lab     string
		Entries []kitEntry
	}
	if err := json.Unmarshal([]byte(out), &man); err != nil || code != 0 {
		t.Fatalf("kit inspect: exit %d %v\n%s", code, err, errOut)
	}
	roles := map[string]int{}
	var node kitEntry
	for _, e := range man.Entries {
		roles[e.Role]++
		if e.Role == "node" {
			node = e
		}
	}
	if man.Lab != "all-features" || roles["node"] != 1 || roles["registry"] != 1 || roles["workload"] != 2 || roles["artifact"] != 1 {
		t.Fatalf("kit holds lab %q with %v, want all-features with a node, a registry, 2 workload images and an artifact", man.Lab, roles)
	}

	// A fresh engine as far as this lab goes: no node image, no registry
	// image, no registry, no pushed content.
	regImage := os.Getenv("KINDLAB_REGISTRY_IMAGE")
	if code, _, errOut := run(t, "registry", "down", "--delete-data"); code != 0 {
		t.Fatalf("registry down: %s", errOut)
	}
	for _, im := range []string{img, regImage} {
		if out, err := exec.Command("docker", "image", "rm", im).CombinedOutput(); err != nil {
			t.Fatalf("docker image rm %s: %v: %s", im, err, out)
		}
	}

	tampered := filepath.Join(t.TempDir(), "tampered.tar")
	tamper(t, file, tampered)
	code, _, errOut = run(t, "kit", "load", tampered)
	if code == 0 || !strings.Contains(errOut, "damaged or tampered") {
		t.Fatalf("load of a tampered kit: exit %d: %s", code, errOut)
	}
	if exec.Command("docker", "image", "inspect", img).Run() == nil {
		t.Fatalf("the tampered kit loaded %s", img)
	}
	os.Remove(tampered)

	start = time.Now()
	code, out, errOut = run(t, "kit", "load", file, "--lab", "all-features", "-o", "json")
	if code != 0 {
		t.Fatalf("kit load: exit %d\n%s", code, errOut)
	}
	t.Logf("kit load took %s: %s", time.Since(start).Round(100*time.Millisecond), lastLine(errOut))
	var loaded struct {
		BytesVerified, BytesLoaded int64
		Images                     []struct {
			Role, Reference, Into string
			AlreadyThere          bool
		}
	}
	if err := json.Unmarshal([]byte(out), &loaded); err != nil {
		t.Fatalf("kit load output %q: %v", out, err)
	}
	for _, im := range loaded.Images {
		if im.AlreadyThere {
			t.Errorf("kit load found %s %s already there in an emptied engine", im.Role, im.Reference)
		}
	}
	id, err := exec.Command("docker", "image", "inspect", "--format", "{{.Id}}", img).Output()
	if err != nil {
		t.Fatalf("after kit load the engine has no %s: %v", img, err)
	}
	found := false
	for _, want := range node.ImageIDs {
		found = found || strings.TrimSpace(string(id)) == want
	}
	if !found {
		t.Errorf("after kit load %s is image %s, the kit carried %v", img, strings.TrimSpace(string(id)), node.ImageIDs)
	}
}

// tamper copies a kit and flips one byte in the middle of its largest blob
// (a node image layer), the way a bad copy would.
func tamper(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	var off, size int64
	tr := tar.NewReader(in)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(hdr.Name, "blobs/") && hdr.Size > size {
			pos, _ := in.Seek(0, io.SeekCurrent)
			off, size = pos, hdr.Size
		}
	}
	if size == 0 {
		t.Fatalf("no blob in %s", from)
	}
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	in.Seek(0, io.SeekStart)
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	out.ReadAt(b, off+size/2)
	b[0] ^= 0xff
	if _, err := out.WriteAt(b, off+size/2); err != nil {
		t.Fatal(err)
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndex(s, "\n")+1:]
}
