package lab

import (
	"fmt"
	"sort"
	"strings"
)

// OverrideImages points lab images at other references, e.g. images built
// offline and pushed to the local registry, whose digests cannot match the
// upstream ones. overrides maps an image name (spec.images[].name) to a
// reference pinned by digest. Manifests name images as "@image/NAME", so
// they follow.
func (r *Resolved) OverrideImages(overrides map[string]string) error {
	names := make([]string, 0, len(r.Images))
	for _, img := range r.Images {
		names = append(names, img.Name)
	}
	sort.Strings(names)
	for _, name := range sortedKeys(overrides) {
		ref := overrides[name]
		i := indexOf(r.Images, func(x Image) bool { return x.Name == name })
		if i < 0 {
			return &OverrideError{Name: name, Err: fmt.Errorf("lab %q has no image %q (valid: %s)", r.Name, name, strings.Join(names, ", "))}
		}
		if err := ValidatePinnedImage(ref); err != nil {
			return &OverrideError{Name: name, Err: err}
		}
		r.Images[i].Reference = ref
	}
	return nil
}

// OverrideError is an image override OverrideImages refuses. Its message
// names the flag the overrides usually come from (--image-override NAME);
// a caller whose overrides came from elsewhere (a bundle's run settings)
// names that place with Name and Err.
type OverrideError struct {
	Name string
	Err  error
}

func (e *OverrideError) Error() string { return "--image-override " + e.Name + ": " + e.Err.Error() }
func (e *OverrideError) Unwrap() error { return e.Err }

// Image returns the reference of the lab image with that name.
func (r *Resolved) Image(name string) (string, bool) {
	i := indexOf(r.Images, func(x Image) bool { return x.Name == name })
	if i < 0 {
		return "", false
	}
	return r.Images[i].Reference, true
}

// ParseOverrides reads NAME=REF pairs as given on the command line.
func ParseOverrides(pairs []string) (map[string]string, error) {
	out := map[string]string{}
	for _, p := range pairs {
		name, ref, ok := strings.Cut(p, "=")
		if !ok || name == "" || ref == "" {
			return nil, fmt.Errorf("--image-override %q: want NAME=REFERENCE, e.g. agnhost=localhost:5001/agnhost:2.52@sha256:…", p)
		}
		out[name] = ref
	}
	return out, nil
}
