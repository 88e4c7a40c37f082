package artifact_test

import (
	"context"
	"fmt"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/go-containerregistry/pkg/crane"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kindlab/kindlab/provision/artifact"
	"github.com/kindlab/kindlab/provision/registry/registrytest"
)

// bigArtifact is 1 GiB of incompressible data in 8 layers of 128 MiB.
func bigArtifact(b *testing.B) (v1.Image, int64) {
	b.Helper()
	data := randomBytes(1 << 30)
	fsys := fstest.MapFS{}
	const layers = 8
	part := len(data) / layers
	for i := range layers {
		fsys[fmt.Sprintf("shard-%d/weights.bin", i)] = &fstest.MapFile{Data: data[i*part : (i+1)*part]}
	}
	img, err := artifact.Build(fsys, artifact.BuildOptions{LayerPerEntry: true})
	if err != nil {
		b.Fatal(err)
	}
	size := int64(0)
	ls, _ := img.Layers()
	for _, l := range ls {
		n, _ := l.Size()
		size += n
	}
	return img, size
}

// BenchmarkPush1GiB pushes a 1 GiB, 8-layer artifact to a distribution
// registry on loopback with artifact.Push and with crane.Push, alternating
// in the same run, each iteration to fresh repositories so every layer is
// really sent. Reports both throughputs and their ratio (kindlab/crane).
//
//	go test -run '^$' -bench Push1GiB -benchtime 3x ./provision/artifact
func BenchmarkPush1GiB(b *testing.B) {
	reg := registrytest.StartDistribution(b)
	img, size := bigArtifact(b)
	ctx := context.Background()
	var kindlabTime, craneTime time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Alternate who goes first so page-cache and disk state favour neither.
		run := []func(){
			func() {
				start := time.Now()
				res, err := artifact.Push(ctx, img, fmt.Sprintf("%s/kindlab/big%d:v1", reg.Addr, i), artifact.PushOptions{})
				if err != nil {
					b.Fatal(err)
				}
				kindlabTime += time.Since(start)
				if res.LayersPushed != 8 {
					b.Fatalf("pushed %d layers, want 8", res.LayersPushed)
				}
			},
			func() {
				start := time.Now()
				if err := crane.Push(img, fmt.Sprintf("%s/crane/big%d:v1", reg.Addr, i)); err != nil {
					b.Fatal(err)
				}
				craneTime += time.Since(start)
			},
		}
		if i%2 == 1 {
			run[0], run[1] = run[1], run[0]
		}
		run[0]()
		run[1]()
	}
	b.StopTimer()
	mb := float64(size) * float64(b.N) / 1e6
	k, c := mb/kindlabTime.Seconds(), mb/craneTime.Seconds()
	b.ReportMetric(k, "kindlab-MB/s")
	b.ReportMetric(c, "crane-MB/s")
	b.ReportMetric(k/c, "ratio")
}

// BenchmarkRepush1GiB re-pushes the unchanged 1 GiB artifact: it must send
// no blob bytes; reports ms per re-push.
//
//	go test -run '^$' -bench Repush1GiB ./provision/artifact
func BenchmarkRepush1GiB(b *testing.B) {
	reg := registrytest.StartDistribution(b)
	img, _ := bigArtifact(b)
	ctx := context.Background()
	ref := reg.Addr + "/kindlab/big:v1"
	if _, err := artifact.Push(ctx, img, ref, artifact.PushOptions{}); err != nil {
		b.Fatal(err)
	}
	var blobBytes int64
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		res, err := artifact.Push(ctx, img, ref, artifact.PushOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if res.BlobBytesSent != 0 || res.LayersPushed != 0 {
			b.Fatalf("re-push sent %d blob bytes, %d layers", res.BlobBytesSent, res.LayersPushed)
		}
		blobBytes += res.BlobBytesSent
	}
	b.StopTimer()
	b.ReportMetric(float64(time.Since(start).Microseconds())/1000/float64(b.N), "ms/push")
	b.ReportMetric(float64(blobBytes)/float64(b.N), "blob-bytes/push")
}
