package lab

import (
	"bytes"
	"fmt"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"

	"gopkg.in/yaml.v3"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/apis/apiserver"
	"k8s.io/apiserver/pkg/apis/apiserver/install"
	"k8s.io/apiserver/pkg/apis/apiserver/validation"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/component-base/featuregate"
)

// ServiceAccountIssuer is the issuer kubeadm v1.31 gives kube-apiserver
// (--service-account-issuer=https://kubernetes.default.svc.<dnsDomain>,
// cmd/kubeadm/app/phases/controlplane/manifests.go); a JWT authenticator may
// not claim it.
const ServiceAccountIssuer = "https://kubernetes.default.svc.cluster.local"

// authnSource names the code that refuses, in every message.
const authnSource = "k8s.io/apiserver v0.31.14 pkg/apis/apiserver/validation"

// The scheme kube-apiserver decodes --authentication-config with: every
// apiserver.config.k8s.io version, strict (unknown and duplicate fields are
// errors), as k8s.io/kubernetes v1.31.14 pkg/kubeapiserver/options/authentication.go does.
var (
	authnScheme = runtime.NewScheme()
	authnCodecs = serializer.NewCodecFactory(authnScheme, serializer.EnableStrict)
)

func init() { install.Install(authnScheme) }

// gateMu serialises the swap of k8s.io/apiserver's global feature gate:
// its validation reads that global, not a parameter.
var gateMu sync.Mutex

// ValidateAuthenticationConfig decodes an AuthenticationConfiguration as
// kube-apiserver 1.31.14 does and runs k8s.io/apiserver's own validation
// with the lab's feature gates applied, so a file the apiserver would refuse
// at start is refused here. disallowedIssuers are the service-account
// issuers (kube-apiserver passes its own). The error is an *Error on the
// authentication config file (display names it), at the offending field's
// line when the YAML has it.
func ValidateAuthenticationConfig(data []byte, gates map[string]bool, disallowedIssuers []string, display string) error {
	fail := func(fieldPath, msg string) error {
		return &Error{File: display, Line: yamlLine(data, fieldPath), Field: fieldPath, Msg: msg}
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return fail("", "empty file: kube-apiserver refuses an empty --authentication-config (\"empty config data\"); write an apiserver.config.k8s.io/v1beta1 AuthenticationConfiguration")
	}
	obj, err := runtime.Decode(authnCodecs.UniversalDecoder(), data)
	if err != nil {
		msg := strings.TrimSpace(err.Error())
		fieldPath := ""
		if m := unknownField.FindStringSubmatch(msg); m != nil {
			fieldPath = m[1]
		}
		return fail(fieldPath, fmt.Sprintf("kube-apiserver 1.31.14 cannot read it: %s (valid: apiVersion apiserver.config.k8s.io/v1alpha1 or v1beta1, kind AuthenticationConfiguration, with the fields of that version; %s)",
			msg, "k8s.io/apiserver v0.31.14 pkg/apis/apiserver, decoded strictly as pkg/kubeapiserver/options/authentication.go does"))
	}
	cfg, ok := obj.(*apiserver.AuthenticationConfiguration)
	if !ok {
		return fail("kind", fmt.Sprintf("is %T, not an AuthenticationConfiguration (kube-apiserver: \"expected AuthenticationConfiguration\")", obj))
	}
	var errs field.ErrorList
	if err := withAPIServerGates(gates, func() {
		errs = validation.ValidateAuthenticationConfiguration(cfg, disallowedIssuers)
	}); err != nil {
		return fail("", fmt.Sprintf("cannot apply the lab's feature gates to k8s.io/apiserver's: %v", err))
	}
	if len(errs) == 0 {
		return nil
	}
	// The first error is enough: one line, and fixing it is the next step.
	fe := errs[0]
	msg := fe.ErrorBody()
	if k := reflect.ValueOf(fe.BadValue).Kind(); k == reflect.Slice || k == reflect.Map || k == reflect.Struct || k == reflect.Pointer {
		// ErrorBody prints such a value as a Go literal; the file's
		// line already shows it.
		msg = fmt.Sprintf("%s: %s", fe.Type, fe.Detail)
	}
	if hint := authnHint(fe); hint != "" {
		msg += " (valid: " + hint + ")"
	}
	msg += fmt.Sprintf(" (kube-apiserver 1.31.14 refuses to start with it: %s)", authnSource)
	return fail(fe.Field, msg)
}

var unknownField = regexp.MustCompile(`unknown field "([^"]+)"`)

// authnHint says what a lab author can change for the refusals a lab
// meets most; upstream's own message covers the rest.
func authnHint(fe *field.Error) string {
	switch {
	case fe.Field == "anonymous" && fe.Type == field.ErrorTypeForbidden:
		return "turn on spec.featureGates.AnonymousAuthConfigurableEndpoints in the lab, or remove the anonymous section"
	case fe.Field == "anonymous.conditions":
		return "anonymous.enabled: true with conditions, or enabled: false without them"
	}
	return ""
}

// withAPIServerGates runs fn with k8s.io/apiserver's global feature gate
// replaced by a copy carrying the lab's gates (those the generic apiserver
// registers; kube-apiserver knows more, but its authentication validation
// reads only these), and puts the original back afterwards.
func withAPIServerGates(gates map[string]bool, fn func()) error {
	gateMu.Lock()
	defer gateMu.Unlock()
	fg := utilfeature.DefaultMutableFeatureGate.DeepCopy()
	known := fg.GetAll()
	m := map[string]bool{}
	for k, v := range gates {
		if _, ok := known[featuregate.Feature(k)]; ok {
			m[k] = v
		}
	}
	if err := fg.SetFromMap(m); err != nil {
		return err
	}
	saved := utilfeature.DefaultFeatureGate
	utilfeature.DefaultFeatureGate = fg
	defer func() { utilfeature.DefaultFeatureGate = saved }()
	fn()
	return nil
}

// yamlLine finds the line of a field path (as k8s.io validation writes it:
// jwt[0].issuer.url) in a YAML document: the line of its key, or of the
// nearest enclosing one the document has; 0 when none.
func yamlLine(data []byte, fieldPath string) int {
	var root yaml.Node
	if fieldPath == "" || yaml.Unmarshal(data, &root) != nil {
		return 0
	}
	n := &root
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	line := 0
	for _, part := range splitPath(fieldPath) {
		var next *yaml.Node
		switch {
		case part.index >= 0 && n.Kind == yaml.SequenceNode && part.index < len(n.Content):
			next = n.Content[part.index]
			line = next.Line
		case part.index < 0 && n.Kind == yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == part.key {
					next = n.Content[i+1]
					line = n.Content[i].Line
					break
				}
			}
		}
		if next == nil {
			break
		}
		n = next
	}
	return line
}

// parentPath drops the last element of a field path: a.b[0].c -> a.b[0] -> a.b -> a -> "".
func parentPath(p string) string {
	if i := strings.LastIndexAny(p, ".["); i > 0 {
		return p[:i]
	}
	return ""
}

// displayBeside names a file a lab refers to (rel, as the lab writes it)
// the way the lab's own Display names the lab: a path on disk, or
// builtin:<path inside the binary>.
func (o Origin) displayBeside(rel string) string {
	if after, ok := strings.CutPrefix(o.Display, "builtin:"); ok {
		return "builtin:" + path.Join(path.Dir(after), rel)
	}
	return filepath.Join(filepath.Dir(o.Display), filepath.FromSlash(rel))
}
