// Package artifact is `kindlab artifact`: build a directory into an
// image-shaped OCI artifact and push it.
package artifact

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/kindlab/kindlab/cmd/kindlab/app/cli"
	"github.com/kindlab/kindlab/provision/artifact"
)

// NewCommand returns `kindlab artifact`.
func NewCommand(s *cli.Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "artifact",
		Short: "Build directories into OCI artifacts and push them",
		Long: "Build a directory into an OCI artifact that Kubernetes image volumes can mount, and push it.\n\n" +
			"The artifact is image-shaped (OCI image manifest and config, tar+gzip layers) because containerd\n" +
			"mounts only images; the artifact type is recorded as the " + artifact.AnnotationArtifactType + " annotation.",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return c.Help() },
	}
	cmd.AddCommand(newPushCommand(s))
	return cmd
}

type pushFlags struct {
	annotations   []string
	artifactType  string
	layerPerEntry bool
	insecure      bool
	quiet         bool
	out           cli.Output
}

func newPushCommand(s *cli.Streams) *cobra.Command {
	f := &pushFlags{}
	cmd := &cobra.Command{
		Use:   "push DIR REFERENCE",
		Short: "Build DIR into an OCI artifact and push it to REFERENCE",
		Long: "Build DIR into an OCI artifact and push it to REFERENCE.\n\n" +
			"The same files always give the same digest: entries are sorted, timestamps, owners and modes are\n" +
			"fixed. Only what the registry lacks is sent, so pushing an unchanged artifact again sends no layer\n" +
			"bytes. Symlinks must stay inside DIR. Progress goes to stderr; the result to stdout.",
		Example: `  # Push the image-volume lab's model to the local registry
  kindlab artifact push ./fixtures/image-volume/files/model localhost:5001/kindlab/model:v1

  # With an artifact type and annotations, printing the result as JSON
  kindlab artifact push ./model localhost:5001/kindlab/model:v2 \
    --artifact-type application/vnd.kindlab.model.v1 \
    --annotation org.opencontainers.image.title="my model" -o json

  # One layer per top-level entry, so changing one shard re-sends only its layer
  kindlab artifact push ./weights localhost:5001/kindlab/weights:v1 --layer-per-entry`,
		Args: cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			return runPush(c, s, f, args[0], args[1])
		},
	}
	fl := cmd.Flags()
	fl.StringArrayVar(&f.annotations, "annotation", nil, "manifest annotation KEY=VALUE (repeatable)")
	fl.StringVar(&f.artifactType, "artifact-type", "", "artifact media type, recorded as the "+artifact.AnnotationArtifactType+" annotation (e.g. application/vnd.kindlab.model.v1)")
	fl.BoolVar(&f.layerPerEntry, "layer-per-entry", false, "one layer per top-level file or directory of DIR instead of one layer")
	fl.BoolVar(&f.insecure, "insecure", false, "plain HTTP to a registry that is not on localhost or loopback")
	fl.BoolVarP(&f.quiet, "quiet", "q", false, "no progress on stderr")
	f.out.AddFlag(cmd, "text", "json")
	return cmd
}

func runPush(c *cobra.Command, s *cli.Streams, f *pushFlags, dir, ref string) error {
	ann, err := parseAnnotations(f.annotations)
	if err != nil {
		return err
	}
	if _, err := artifact.ParseReference(ref, f.insecure); err != nil {
		return cli.WithCode(cli.ExitUsage, err)
	}
	fsys, err := artifact.OpenDir(dir)
	if err != nil {
		return cli.WithCode(cli.ExitUsage, err)
	}
	img, err := artifact.Build(fsys, artifact.BuildOptions{
		ArtifactType:  f.artifactType,
		Annotations:   ann,
		LayerPerEntry: f.layerPerEntry,
	})
	if err != nil {
		return cli.WithCode(cli.ExitUsage, fmt.Errorf("build %s: %w", dir, err))
	}
	opts := artifact.PushOptions{Insecure: f.insecure}
	if !f.quiet {
		opts.Progress = NewProgressPrinter(s.ErrOut, ref)
	}
	res, err := artifact.Push(c.Context(), img, ref, opts)
	if err != nil {
		return err
	}
	if f.out.JSON() {
		return cli.PrintJSON(s.Out, res)
	}
	fmt.Fprintf(s.Out, "pushed %s@%s (%s: %d sent, %d already present; %s sent)\n",
		res.Reference, res.Digest, plural(res.Layers, "layer"), res.LayersPushed, res.LayersSkipped, HumanBytes(res.BytesSent))
	return nil
}

func parseAnnotations(kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, cli.Usagef("--annotation %q: want KEY=VALUE, e.g. org.opencontainers.image.title=model", kv)
		}
		out[k] = v
	}
	return out, nil
}

// NewProgressPrinter returns a push progress callback that writes a line to
// w when a layer completes, at most every two seconds in between, and once
// when the push is complete, so a log stays readable. The `up` pipeline can
// use it for its pushes too.
func NewProgressPrinter(w io.Writer, ref string) func(artifact.Progress) {
	var mu sync.Mutex
	var last time.Time
	lastLayers, finished := -1, false
	return func(p artifact.Progress) {
		mu.Lock()
		defer mu.Unlock()
		complete := p.LayersDone == p.LayersTotal && p.BytesDone == p.BytesTotal && p.BytesTotal > 0
		switch {
		case finished:
			return
		case complete:
			finished = true
		case p.LayersDone == lastLayers && time.Since(last) < 2*time.Second:
			return
		}
		last, lastLayers = time.Now(), p.LayersDone
		fmt.Fprintf(w, "pushing %s: %d/%d layers, %s/%s (%s sent)\n", ref, p.LayersDone, p.LayersTotal,
			HumanBytes(p.BytesDone), HumanBytes(p.BytesTotal), HumanBytes(p.BytesSent))
	}
}

// HumanBytes formats n in binary units.
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	units := []string{"KiB", "MiB", "GiB", "TiB"}
	v, i := float64(n)/unit, 0
	for v >= unit && i < len(units)-1 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}
