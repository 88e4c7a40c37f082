package bundle

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Redacted replaces a secret value. In a Secret's data it is base64 of
// itself, so the object still decodes and applies. Every marker kindlab
// writes starts with it (REDACTED, REDACTED(JWT), http://REDACTED@host), and
// none is a YAML indicator, so `token: REDACTED(JWT)` stays a string.
const Redacted = "REDACTED"

// RedactedAnnotation marks an object whose values kindlab replaced.
const RedactedAnnotation = "kindlab.dev/redacted"

// MaxLine is the longest line the redaction reads whole, in bytes. A longer
// line is left out of the bundle (and counted) rather than split, since a
// split could cut a credential in two halves that no rule recognises.
// Kubernetes objects are at most 1.5 MiB in etcd, so one object per line
// (an audit event, a JSON log) fits.
const MaxLine = 2 << 20

var redactedB64 = base64.StdEncoding.EncodeToString([]byte(Redacted))

// marker is what replaces a value a shape rule found: the shape stays
// visible, the value does not.
func marker(what string) string { return Redacted + "(" + what + ")" }

// A bundle goes into bug trackers, so everything in it passes through these
// rules: by rule, not by example. They are a deny list of credential shapes
// and of places credentials live (keys that name a secret), not an allow
// list of safe text, because kind's logs are free text from many
// components. Each rule names where its shape is documented.
//
// Why not gitleaks (github.com/zricethezav/gitleaks/v8 v8.30.1) as a
// library: its detect package pulls in about 50 more modules (viper, rar,
// 7z, brotli, xz and lz4 decoders for archive scanning, terminal colours;
// 12.8 MB for a program that only calls it),
// configures itself through viper's process-wide state, scans a fragment
// as one string (no line streaming), ran at about 0.25 MB/s on kubelet-style
// logs here (62 s for 16 MB), and its generic rule, which needs high
// entropy, missed most of what Kubernetes leaks (docker auth, proxy
// passwords, env name/value pairs, short passwords, Bearer headers). The
// vendor prefixes below are the same documented shapes its rules use.
//
// The table is applied to every line in order; shapes come before the
// key/value rules so a JWT under `token:` is reported as a JWT. Rules marked
// multi-line keep state from one line to the next (scrubber).
//
// (Set in init: the base64 rule runs the table on what it decodes.)
var rules []rule

func init() { rules = ruleTable }

var ruleTable = []rule{
	{
		name:   "private key (PEM)",
		source: "RFC 7468 textual encodings (PKCS#1 RSA, SEC1 EC, PKCS#8, ENCRYPTED), OpenSSH PROTOCOL.key, RFC 4880 PGP; multi-line: a block spans lines, or is cut short by a log",
		hints:  []string{"private key"},
		apply:  redactPEM,
	},
	{
		name:   "Secret value",
		source: "a core/v1 Secret inside a JSON line (an audit event of a Secret request, a JSON log, a last-applied annotation in either): its data keys are any names, so the line is parsed and walked as Object does",
		hints:  []string{"secret"},
		apply:  redactJSONLine,
	},
	{
		name:   "token (JWT)",
		source: "RFC 7519/7515 compact serialization (service-account and OIDC tokens): base64url header and claims, both JSON objects, so both start eyJ",
		hints:  []string{"eyj"},
		re:     regexp.MustCompile(`eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*`),
		repl:   whole("JWT"),
	},
	{
		name:   "base64 holding a secret",
		source: "kubeconfig client-key-data (client-go clientcmd/api/v1), Secret-like data in ConfigMaps (.dockerconfigjson): base64 whose decoding another rule finds a secret in; multi-line: wrapped base64 (base64 -w 76)",
		hints:  nil, // any line: base64 has no literal
		apply:  redactBase64,
	},
	{
		name:   "bearer token",
		source: "RFC 6750 §2.1 Authorization: Bearer; only token-like values (digits, mixed case or punctuation), so prose ('bearer authentication') stays",
		hints:  []string{"bearer"},
		re:     regexp.MustCompile(`(?i)\b(bearer)(\s+)([A-Za-z0-9._~+/-]{8,}=*)`),
		repl: func(l []byte, m []int) ([]byte, bool) {
			v := l[m[6]:m[7]]
			if !tokenLike(v) {
				return nil, false
			}
			return cat(l[m[2]:m[3]], l[m[4]:m[5]], Redacted), true
		},
	},
	{
		name:   "basic auth",
		source: "RFC 7617 Authorization: Basic base64(user:password); the decoding must hold a colon",
		hints:  []string{"basic"},
		re:     regexp.MustCompile(`(?i)\b(basic)(\s+)([A-Za-z0-9+/]{4,}={0,2})`),
		repl: func(l []byte, m []int) ([]byte, bool) {
			dec, err := base64.StdEncoding.DecodeString(string(l[m[6]:m[7]]))
			if err != nil || !bytes.Contains(dec, []byte(":")) || !printable(dec) {
				return nil, false
			}
			return cat(l[m[2]:m[3]], l[m[4]:m[5]], Redacted), true
		},
	},
	{
		name:   "URL user info",
		source: "RFC 3986 §3.2.1 user:password@ in a URL (HTTP_PROXY and friends, which kind passes to nodes and logs); scheme and host stay, a user without password stays",
		hints:  []string{"://"},
		re:     regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://)([^\s/?#@:"'<>\\]*):([^\s/?#"'<>\\]*)@`),
		repl: func(l []byte, m []int) ([]byte, bool) {
			return cat(l[m[2]:m[3]], Redacted+"@"), true
		},
	},
	{
		name:   "AWS access key",
		source: "AWS IAM 'unique ID prefixes': AKIA (access key), ASIA (temporary), ABIA, ACCA; 16 more base32 characters",
		hints:  []string{"akia", "asia", "abia", "acca"},
		re:     regexp.MustCompile(`\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}\b`),
		repl:   whole("AWS access key"),
	},
	{
		name:   "Google API key",
		source: "Google Cloud 'API keys': AIza and 35 characters (a service-account JSON's private_key is a PEM and its key is private_key: both rules above and below)",
		hints:  []string{"aiza"},
		re:     regexp.MustCompile(`\bAIza[0-9A-Za-z_-]{35}\b`),
		repl:   whole("Google API key"),
	},
	{
		name:   "GitHub token",
		source: "GitHub 'Behind GitHub's new authentication token formats' (2021): ghp_ gho_ ghu_ ghs_ ghr_ + 36 base62; fine-grained github_pat_",
		hints:  []string{"ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"},
		re:     regexp.MustCompile(`\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b`),
		repl:   whole("GitHub token"),
	},
	{
		name:   "GitLab token",
		source: "GitLab 'Token prefixes': glpat- personal access tokens",
		hints:  []string{"glpat-"},
		re:     regexp.MustCompile(`\bglpat-[A-Za-z0-9_-]{20,}`),
		repl:   whole("GitLab token"),
	},
	{
		name:   "Slack token",
		source: "Slack 'Token types': xoxb- xoxp- xoxa- xoxr- xoxs- xoxe-; incoming webhooks hooks.slack.com/services/T…/B…/…",
		hints:  []string{"xox", "hooks.slack.com"},
		re:     regexp.MustCompile(`\bxox[abposre]-[A-Za-z0-9-]{10,}|hooks\.slack\.com/services/[A-Za-z0-9/_-]{20,}`),
		repl:   whole("Slack token"),
	},
	{
		name:   "bootstrap token",
		source: "kubeadm bootstrap tokens (k8s.io/cluster-bootstrap/token/api BootstrapTokenPattern [a-z0-9]{6}.[a-z0-9]{16}); an all-hex secret, or one without a digit, is left to the key/flag rules, since event names (worker.18800c0a2b1e3f4d) and dotted words (docker.metricscollector) share the shape",
		hints:  []string{"."},
		apply:  redactBootstrapTokens,
	},
	{
		name:   "kubeadm certificate key",
		source: "kubeadm upload-certs (cmd/kubeadm/app/cmd/phases/init/uploadcerts.go) prints 'Using certificate key:' and 64 hex digits, on the same or the next line (multi-line)",
		hints:  []string{"certificate key"},
		apply: func(s *scrubber, l []byte, n *int) []byte {
			if bytes.HasSuffix(bytes.ToLower(bytes.TrimRight(l, " \t")), []byte("certificate key:")) {
				s.next, s.nextHex = 0, true
				return l
			}
			return replaceAll(certKeyProse, l, func(l []byte, m []int) ([]byte, bool) {
				return cat(l[m[2]:m[3]], Redacted), true
			}, n)
		},
	},
	{
		name:   "env value",
		source: "core/v1 EnvVar and HTTPHeader {name, value} whose name names a secret (secretKey), on one line: JSON, YAML flow, klog, Go %+v (EnvVar{Name:X,Value:y}); across lines in YAML: the scrubber",
		hints:  []string{"name"},
		apply:  redactEnvPairs,
	},
	{
		name:   "credential flag",
		source: "command-line flags naming a secret (secretKey) followed by their value: --token abc, \"--token\",\"abc\" in JSON args; --db-password=x is the key/value rule; YAML args lists across lines: the scrubber",
		hints:  secretHints,
		apply:  redactFlags,
	},
	{
		name:   "credential value",
		source: "values under keys naming a secret (secretKey): YAML, JSON (also escaped inside strings), TOML (containerd config.toml/hosts.toml auth, password, identitytoken), docker config.json auth/identitytoken/registrytoken (docker/cli config/types), env X_PASSWORD=, klog/logfmt password=\"x\", Go %+v Password:x; multi-line: YAML block scalars and values on the next line",
		hints:  secretHints,
		apply:  redactKeyValues,
	},
}

// rule is one credential shape. Either re and repl (repl gets the
// submatch indices of each match and returns the replacement, or false to
// keep the match) or apply, for rules that need more than one regexp.
type rule struct {
	name, source string
	// hints are lower-case literals one of which a line must hold for the
	// rule to run; none means every line. They keep tens of megabytes of
	// logs fast: most lines hold none.
	hints []string
	re    *regexp.Regexp
	repl  func(line []byte, m []int) ([]byte, bool)
	apply func(s *scrubber, line []byte, n *int) []byte
}

// secretHints are the literals a key that names a secret contains
// (secretKey decides).
var secretHints = []string{"pass", "pwd", "secret", "token", "auth", "key", "cred", "cookie"}

var certKeyProse = regexp.MustCompile(`(?i)(certificate key:?[ \t]+)([0-9a-f]{64})\b`)

// redactBootstrapTokens finds token-id.token-secret by hand: a regexp
// for it runs on every line with a dot, which is most of them.
func redactBootstrapTokens(s *scrubber, l []byte, n *int) []byte {
	var out []byte
	last := 0
	for i := 6; i+17 <= len(l); i++ {
		if l[i] != '.' {
			continue
		}
		s0, e := i-6, i+17
		if !lowerAlnum(l[s0:i]) || !lowerAlnum(l[i+1:e]) || (s0 > 0 && wordChar(l[s0-1])) || (e < len(l) && wordChar(l[e])) {
			continue
		}
		if allHex(l[i+1:e]) || !hasDigit(l[s0:e]) {
			// An event name (worker.18800c0a2b1e3f4d), or two words
			// (docker.metricscollector): 22 random characters of [a-z0-9]
			// hold no digit once in 1300.
			continue
		}
		out = append(append(out, l[last:s0]...), marker("bootstrap token")...)
		last = e
		i = e
		*n++
	}
	if out == nil {
		return l
	}
	return append(out, l[last:]...)
}

func hasDigit(b []byte) bool {
	for _, c := range b {
		if c >= '0' && c <= '9' {
			return true
		}
	}
	return false
}

func lowerAlnum(b []byte) bool {
	for _, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func allHex(b []byte) bool {
	for _, c := range b {
		if !(c >= 'a' && c <= 'f' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func wordChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}

func whole(what string) func([]byte, []int) ([]byte, bool) {
	return func([]byte, []int) ([]byte, bool) { return []byte(marker(what)), true }
}

// sub is submatch i of m, empty when the group did not take part.
func sub(l []byte, m []int, i int) string {
	if m[2*i] < 0 {
		return ""
	}
	return string(l[m[2*i]:m[2*i+1]])
}

func cat(parts ...any) []byte {
	var b []byte
	for _, p := range parts {
		switch p := p.(type) {
		case []byte:
			b = append(b, p...)
		case string:
			b = append(b, p...)
		}
	}
	return b
}

// Text replaces credentials in b and says what it replaced, by rule name.
func Text(b []byte) ([]byte, map[string]int) {
	var out bytes.Buffer
	found, err := Stream(&out, bytes.NewReader(b))
	if err != nil { // a bytes.Reader and a bytes.Buffer do not fail
		panic(err)
	}
	return out.Bytes(), found
}

// Stream copies src to dst with credentials replaced, line by line: memory
// is bounded by MaxLine whatever the size of src. Lines longer than MaxLine
// are replaced by a line saying so. It returns what it replaced by rule
// name, and the first read or write error.
func Stream(dst io.Writer, src io.Reader) (map[string]int, error) {
	s := newScrubber()
	err := s.stream(dst, src)
	return s.found, err
}

func (s *scrubber) stream(dst io.Writer, src io.Reader) error {
	r := bufio.NewReaderSize(src, 64<<10)
	w := bufio.NewWriterSize(dst, 64<<10)
	var long []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			if long != nil || len(chunk) > 0 {
				if len(long)+len(chunk) > MaxLine {
					if err := s.skipLong(w, r, len(long)+len(chunk)); err != nil {
						return err
					}
					long = long[:0]
					continue
				}
				long = append(long, chunk...)
			}
			continue
		}
		line := chunk
		if len(long) > 0 {
			if len(long)+len(chunk) > MaxLine {
				s.tooLong(w, len(long)+len(chunk), len(chunk) > 0 && chunk[len(chunk)-1] == '\n')
				long = long[:0]
				if err == io.EOF {
					return w.Flush()
				}
				if err != nil {
					return err
				}
				continue
			}
			line = append(long, chunk...)
		}
		if len(line) > 0 {
			nl := line[len(line)-1] == '\n'
			body := bytes.TrimSuffix(line, []byte("\n"))
			cr := bytes.HasSuffix(body, []byte("\r"))
			body = bytes.TrimSuffix(body, []byte("\r"))
			if out, keep := s.line(body); keep {
				w.Write(out)
				if cr {
					w.WriteByte('\r')
				}
				if nl {
					w.WriteByte('\n')
				}
			}
		}
		long = long[:0]
		if err == io.EOF {
			return w.Flush()
		}
		if err != nil {
			return err
		}
	}
}

// skipLong discards the rest of a line longer than MaxLine.
func (s *scrubber) skipLong(w *bufio.Writer, r *bufio.Reader, n int) error {
	for {
		chunk, err := r.ReadSlice('\n')
		n += len(chunk)
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		s.tooLong(w, n, len(chunk) > 0 && chunk[len(chunk)-1] == '\n')
		if err == io.EOF {
			return nil
		}
		return err
	}
}

func (s *scrubber) tooLong(w *bufio.Writer, n int, nl bool) {
	if nl {
		n-- // the line break is not part of the line
	}
	s.found["line too long to check"]++
	s.reset()
	fmt.Fprintf(w, "%s(line of %d bytes left out: longer than %d bytes, too long to check for secrets)", Redacted, n, MaxLine)
	if nl {
		w.WriteByte('\n')
	}
}

// scrubber applies the rules to one line after the other and carries what
// a rule learnt from one line to the next (a PEM block, a YAML block scalar
// under `password: |`, an env `name: DB_PASSWORD` whose value follows).
// Each state is -1 when off.
type scrubber struct {
	found map[string]int
	// pem: inside a private key block whose BEGIN line was replaced.
	pem bool
	// b64: indentation of wrapped base64 whose first line was replaced.
	b64 int
	// block: column of a secret key whose YAML block scalar follows.
	block int
	// next: column of a secret key (or a bare secret flag in a YAML list)
	// whose value may be on the next line; nextHex: only a 64-hex
	// certificate key counts (kubeadm's output, at any column).
	next    int
	nextHex bool
	// nextOne: only one value follows (a flag's), not a list.
	nextOne bool
	// env: column of an env `name:` naming a secret; `value:` at that
	// column is its value. envLines bounds how far it looks.
	env      int
	envLines int
	// depth is 1 inside a decoded base64 run: no base64 in base64.
	depth int
	// noJSON: the text is JSON that Object walked already.
	noJSON bool
	// lower is the line being redacted in lower case, for the rules.
	lower []byte
}

// redactionOff turns every rule off. Only tests set it: the leak test
// builds a bundle without redaction once, to prove that its search finds
// each planted value when nothing hides it.
var redactionOff bool

func newScrubber() *scrubber {
	s := &scrubber{found: map[string]int{}}
	s.reset()
	return s
}

func (s *scrubber) reset() {
	s.pem, s.b64, s.block, s.next, s.nextHex, s.nextOne, s.env = false, -1, -1, -1, false, false, -1
}

// line returns the line redacted, or keep=false when the whole line is part
// of a secret already replaced (the body of a PEM block).
func (s *scrubber) line(l []byte) ([]byte, bool) {
	if out, keep, done := s.continued(l); done {
		return out, keep
	}
	if redactionOff {
		return l, true
	}
	lower := bytes.ToLower(l)
	for i := range rules {
		r := &rules[i]
		if !hasHint(lower, r.hints) {
			continue
		}
		n := 0
		s.lower = lower
		before := l
		if r.apply != nil {
			l = r.apply(s, l, &n)
		} else {
			l = replaceAll(r.re, l, r.repl, &n)
		}
		s.found[r.name] += n
		if s.found[r.name] == 0 {
			delete(s.found, r.name)
		}
		if len(l) != len(before) || len(l) > 0 && &l[0] != &before[0] {
			lower = bytes.ToLower(l)
		}
	}
	return l, true
}

func hasHint(lower []byte, hints []string) bool {
	if len(hints) == 0 {
		return true
	}
	for _, h := range hints {
		if bytes.Contains(lower, []byte(h)) {
			return true
		}
	}
	return false
}

func replaceAll(re *regexp.Regexp, l []byte, repl func([]byte, []int) ([]byte, bool), n *int) []byte {
	ms := re.FindAllSubmatchIndex(l, -1)
	if ms == nil {
		return l
	}
	var out []byte
	last := 0
	for _, m := range ms {
		if bytes.Contains(l[m[0]:m[1]], []byte(Redacted)) {
			continue
		}
		r, ok := repl(l, m)
		if !ok {
			continue
		}
		out = append(append(out, l[last:m[0]]...), r...)
		last = m[1]
		*n++
	}
	if out == nil {
		return l
	}
	return append(out, l[last:]...)
}

// continued handles a line that belongs to something an earlier line
// started. done=false passes the line on to the rules.
func (s *scrubber) continued(l []byte) (out []byte, keep, done bool) {
	indent := indentOf(l)
	trimmed := bytes.TrimSpace(l)
	if s.pem {
		if i := bytes.Index(l, []byte("-----END ")); i >= 0 {
			s.pem = false
			rest := l[i+len("-----END "):]
			if j := bytes.Index(rest, []byte("-----")); j >= 0 {
				rest = bytes.TrimLeft(rest[j+5:], " \t")
			}
			if len(rest) == 0 {
				return nil, false, true
			}
			out, _ := s.line(rest)
			return out, true, true
		}
		if len(trimmed) == 0 || b64Line.Match(trimmed) || pemHeader.Match(trimmed) {
			return nil, false, true
		}
		s.pem = false
	}
	if s.b64 >= 0 {
		if indent >= s.b64 && len(trimmed) > 0 && b64Line.Match(trimmed) {
			return nil, false, true
		}
		s.b64 = -1
	}
	if s.block >= 0 {
		if len(trimmed) == 0 || indent > s.block {
			return nil, false, true
		}
		s.block = -1
	}
	if s.next >= 0 {
		next, hexOnly, one := s.next, s.nextHex, s.nextOne
		s.next, s.nextHex, s.nextOne = -1, false, false
		if hexOnly {
			if hex64.Match(trimmed) {
				s.found["kubeadm certificate key"]++
				return cat(l[:indent], Redacted), true, true
			}
		} else if item, ok := bytes.CutPrefix(trimmed, []byte("- ")); ok && indent >= next {
			// A list under a secret key, or the value after a bare flag.
			item = bytes.TrimSpace(item)
			if len(item) > 0 && !bytes.ContainsAny(item[:1], "-[{#") && !bytes.Contains(item, []byte(": ")) && !plainValue(string(unquote(item))) {
				if one {
					s.found["credential flag"]++
				} else {
					s.found["credential value"]++
					s.next = next // the rest of the list
				}
				return cat(l[:indent], "- ", Redacted), true, true
			}
		} else if indent > next && len(trimmed) > 0 && !bytes.ContainsAny(trimmed[:1], "-[{#\"'") && !bytes.Contains(trimmed, []byte(": ")) && !bytes.HasSuffix(trimmed, []byte(":")) && !plainValue(string(trimmed)) {
			// A plain scalar continued on the next, deeper line.
			s.found["credential value"]++
			return cat(l[:indent], Redacted), true, true
		}
	}
	if s.env >= 0 {
		s.envLines++
		m := yamlKey.FindSubmatchIndex(l)
		switch {
		case s.envLines > 20:
			s.env = -1
		case m == nil:
			if len(trimmed) > 0 && indent < s.env {
				s.env = -1
			}
		case m[6] < s.env:
			s.env = -1
		case m[6] == s.env && string(bytes.Trim(l[m[6]:m[7]], `"`)) == "value":
			col := s.env
			s.env = -1
			v := bytes.TrimSpace(l[m[1]:])
			v, comma := bytes.CutSuffix(v, []byte(","))
			if len(v) <= 2 && len(v) > 0 && (v[0] == '|' || v[0] == '>') {
				s.block = col
				s.found["env value"]++
				return cat(l[:m[1]], " ", Redacted), true, true
			}
			if len(v) > 0 && !plainValue(string(unquote(v))) {
				s.found["env value"]++
				out := cat(l[:m[1]], " ", quoteLike(v, Redacted))
				if comma {
					out = append(out, ',')
				}
				return out, true, true
			}
		case m[6] == s.env && string(bytes.Trim(l[m[6]:m[7]], `"`)) == "name":
			s.env = -1 // the next item; the rules arm it again if it names a secret
		}
	}
	return nil, false, false
}

var (
	b64Line   = regexp.MustCompile(`^[A-Za-z0-9+/]+={0,2}$`)
	pemHeader = regexp.MustCompile(`^[A-Za-z-]+: `)
	hex64     = regexp.MustCompile(`^[0-9a-f]{64}$`)
	// yamlKey is a YAML (or pretty JSON) mapping key at the start of a line,
	// after an optional list dash: groups are indentation, dash, key.
	yamlKey = regexp.MustCompile(`^([ \t]*)(-[ \t]+)?("?[A-Za-z0-9_.-]+"?)[ \t]*:`)
)

func indentOf(l []byte) int {
	return len(l) - len(bytes.TrimLeft(l, " \t"))
}

// pemKey is a whole private key block on one line: JSON-escaped (\n) or
// with real line breaks folded by a log. pemBegin is a block whose END is
// not on this line.
var (
	pemKey   = regexp.MustCompile(`-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY( BLOCK)?-----(?:[A-Za-z0-9+/=\s:,.-]|\\[nrt])*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----`)
	pemBegin = regexp.MustCompile(`-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY( BLOCK)?-----`)
)

func redactPEM(s *scrubber, l []byte, n *int) []byte {
	l = replaceAll(pemKey, l, func(l []byte, m []int) ([]byte, bool) {
		return []byte(marker(sub(l, m, 1) + "PRIVATE KEY" + sub(l, m, 2))), true
	}, n)
	m := pemBegin.FindSubmatchIndex(l)
	if m == nil {
		return l
	}
	*n++
	what := marker(sub(l, m, 1) + "PRIVATE KEY" + sub(l, m, 2))
	rest := bytes.TrimSpace(l[m[1]:])
	if len(rest) == 0 {
		s.pem = true // the body is on the lines that follow
	}
	// A block cut short (a truncated log line, a JSON string) has no END:
	// whatever follows BEGIN on the line may be key material.
	return cat(l[:m[0]], what)
}

// base64Runs are the runs of base64 (with padding) long enough to hold a
// credential, 20 characters or more; shorter ones are words. base64url runs
// are the JWT rule's.
func base64Runs(l []byte) [][2]int {
	var out [][2]int
	for i := 0; i < len(l); {
		if !b64Char(l[i]) {
			i++
			continue
		}
		j := i
		for j < len(l) && b64Char(l[j]) {
			j++
		}
		e := j
		for e < len(l) && e-j < 2 && l[e] == '=' {
			e++
		}
		if j-i >= 20 {
			out = append(out, [2]int{i, e})
		}
		i = e
		if i == j {
			i++
		}
	}
	return out
}

func b64Char(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '+' || c == '/'
}

func redactBase64(s *scrubber, l []byte, n *int) []byte {
	if s.depth > 0 {
		return l // inside a decoding already: no base64 of base64 of …
	}
	ms := base64Runs(l)
	if ms == nil {
		return l
	}
	var out []byte
	last := 0
	for _, m := range ms {
		what, ok := b64Secret(l[m[0]:m[1]])
		if !ok {
			continue
		}
		out = append(append(out, l[last:m[0]]...), marker("base64 "+what)...)
		last = m[1]
		*n++
		// A long run that ends its line is likely wrapped: the lines of
		// base64 that follow are the rest of it.
		if m[1] == len(bytes.TrimRight(l, " \t")) && m[1]-m[0] >= 60 {
			s.b64 = indentOf(l)
		}
	}
	if out == nil {
		return l
	}
	return append(out, l[last:]...)
}

// b64Secret decodes a base64 run and says which rule finds a secret in the
// decoding. Only text is looked into: hashes and other binary stay.
func b64Secret(run []byte) (string, bool) {
	s := bytes.TrimRight(run, "=")
	s = s[:len(s)/4*4] // a prefix of whole groups decodes even when cut
	if len(s) < 16 {
		return "", false
	}
	dec := make([]byte, base64.StdEncoding.DecodedLen(len(s)))
	k, err := base64.StdEncoding.Decode(dec, s)
	if err != nil {
		return "", false
	}
	dec = dec[:k]
	// The last rune may be cut in two by the group boundary.
	for len(dec) > 0 && !utf8.Valid(dec) {
		dec = dec[:len(dec)-1]
	}
	if !printable(dec) {
		return "", false
	}
	inner := newScrubber()
	inner.depth = 1
	for _, l := range bytes.Split(dec, []byte("\n")) {
		inner.line(bytes.TrimSuffix(l, []byte("\r")))
	}
	if inner.pem || len(inner.found) > 0 {
		whats := make([]string, 0, len(inner.found))
		for w := range inner.found {
			whats = append(whats, w)
		}
		sort.Strings(whats)
		if len(whats) == 0 {
			whats = []string{"private key (PEM)"}
		}
		return whats[0], true
	}
	return "", false
}

// printable is text: valid UTF-8 without control characters but line
// breaks and tabs.
func printable(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if r < 0x20 && r != '\n' && r != '\r' && r != '\t' || r == 0x7f || r == utf8.RuneError {
			return false
		}
	}
	return true
}

// tokenLike says whether a Bearer value is a credential rather than a word:
// tokens mix digits, cases or punctuation; prose does not.
func tokenLike(v []byte) bool {
	var digit, upper, lower, punct bool
	for _, c := range v {
		switch {
		case c >= '0' && c <= '9':
			digit = true
		case c >= 'A' && c <= 'Z':
			upper = true
		case c >= 'a' && c <= 'z':
			lower = true
		default:
			punct = true
		}
	}
	return digit || punct || (upper && lower)
}

// envPair is core/v1 EnvVar (or HTTPHeader) on one line, up to where its
// value starts.
var envPair = regexp.MustCompile(`(?i)\bname\\*["']?\s*[:=]\s*\\*["']?([A-Za-z0-9_.-]+)\\*["']?\s*[,;\s]\s*\\*["']?value\\*["']?\s*[:=][ \t]*`)

func redactEnvPairs(s *scrubber, l []byte, n *int) []byte {
	// Across lines (YAML, pretty JSON): a `name:` key that names a secret
	// arms the scrubber for the `value:` at the same column.
	if m := yamlKey.FindSubmatchIndex(l); m != nil && string(bytes.Trim(l[m[6]:m[7]], `"`)) == "name" {
		v := bytes.TrimSuffix(bytes.TrimSpace(l[m[1]:]), []byte(","))
		if secretKey(string(unquote(v))) {
			s.env, s.envLines = m[6], 0
		}
	}
	return replaceValues(envPair, l, n, func(l []byte, m []int) bool {
		return secretKey(string(l[m[2]:m[3]]))
	})
}

// replaceValues replaces the value that follows each match of re (which
// ends where the value starts) when ok says the match names a secret.
func replaceValues(re *regexp.Regexp, l []byte, n *int, ok func([]byte, []int) bool) []byte {
	ms := re.FindAllSubmatchIndex(l, -1)
	if ms == nil {
		return l
	}
	var out []byte
	last := 0
	for _, m := range ms {
		if m[1] < last || !ok(l, m) {
			continue
		}
		vs, ve, inner := valueAt(l, m[1])
		if ve <= vs || plainValue(string(inner)) || bytes.Contains(l[vs:ve], []byte(Redacted)) {
			continue
		}
		out = append(append(out, l[last:vs]...), quoteLike(l[vs:ve], Redacted)...)
		last = ve
		*n++
	}
	if out == nil {
		return l
	}
	return append(out, l[last:]...)
}

// valueAt finds the value that starts at i: quoted ("…", '…', or \"…\" inside
// a JSON string, unterminated to the end of the line) or bare (to the next
// space or delimiter). An HTTP auth scheme (Bearer x) is one value with its
// credential. inner is the value without its quotes.
func valueAt(l []byte, i int) (start, end int, inner []byte) {
	if i >= len(l) {
		return i, i, nil
	}
	// Escaped quotes: \" opens, and the same number of backslashes and a
	// quote closes.
	j := i
	for j < len(l) && l[j] == '\\' {
		j++
	}
	if j < len(l) && (l[j] == '"' || l[j] == '\'') {
		q := l[j]
		open := l[i : j+1]
		for k := j + 1; k < len(l); k++ {
			if l[k] == '\\' && len(open) == 1 && k+1 < len(l) {
				k++ // an escape inside a plain quoted string
				continue
			}
			if l[k] == q && bytes.HasSuffix(l[:k+1], open) && (len(open) == 1 || k-len(open)+1 > j) {
				// For \" the backslashes before the quote must be exactly
				// those of the opening.
				if len(open) > 1 && k-len(open) >= 0 && l[k-len(open)] == '\\' {
					continue
				}
				return i, k + 1, l[j+1 : k-len(open)+1]
			}
		}
		return i, len(l), l[j+1:]
	}
	if j > i {
		return i, i, nil
	}
	k := i
	for k < len(l) && !isDelim(l[k]) {
		k++
	}
	v := l[i:k]
	if authScheme(string(v)) && k < len(l) && l[k] == ' ' {
		e := k + 1
		for e < len(l) && !isDelim(l[e]) {
			e++
		}
		if e > k+1 {
			return i, e, l[i:e]
		}
	}
	return i, k, v
}

// authScheme is an HTTP authentication scheme (RFC 9110 §11) that comes
// before a credential.
func authScheme(s string) bool {
	switch strings.ToLower(s) {
	case "bearer", "basic", "token", "digest", "negotiate":
		return true
	}
	return false
}

func isDelim(c byte) bool {
	switch c {
	case ' ', '\t', ',', ';', '}', ']', ')', '"', '\'', '&', '\\', '>':
		return true
	}
	return false
}

// quoteLike replaces a value and keeps its quoting, so YAML, JSON and TOML
// keep their types.
func quoteLike(v []byte, with string) []byte {
	j := 0
	for j < len(v) && v[j] == '\\' {
		j++
	}
	if j < len(v) && (v[j] == '"' || v[j] == '\'') {
		open := v[:j+1]
		return cat(open, with, open)
	}
	return []byte(with)
}

func unquote(v []byte) []byte {
	v = bytes.TrimLeft(v, `\`)
	if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') {
		v = bytes.TrimRight(v[1:], `\`+string(v[0]))
	}
	return v
}

// bareFlagItem is a YAML list item that is a flag without its value.
var bareFlagItem = regexp.MustCompile(`^[ \t]*-[ \t]+["']?(--?[A-Za-z][A-Za-z0-9_.-]*)["']?[ \t]*$`)

// keyCandidates finds the identifiers of a line that contain one of
// secretHints, whole (start, end), in order. A hand-written scan: a regexp
// with a leading [A-Za-z0-9_.-]* tries every position of every line.
func keyCandidates(l, lower []byte) [][2]int {
	var out [][2]int
	for _, h := range secretHints {
		for i := 0; ; {
			j := bytes.Index(lower[i:], []byte(h))
			if j < 0 {
				break
			}
			ks, ke := i+j, i+j+len(h)
			for ks > 0 && keyChar(l[ks-1]) {
				ks--
			}
			for ke < len(l) && keyChar(l[ke]) {
				ke++
			}
			out = append(out, [2]int{ks, ke})
			i = ke
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i][0] < out[j][0] })
	// The same key found by two hints (passwordToken) once.
	dedup := out[:0]
	for _, c := range out {
		if len(dedup) == 0 || dedup[len(dedup)-1] != c {
			dedup = append(dedup, c)
		}
	}
	return dedup
}

func keyChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-'
}

// redactFlags replaces the value after a flag naming a secret and a space
// (--token abc), or the next string of a JSON args list ("--token","abc").
// --db-password=x is the key/value rule's.
func redactFlags(s *scrubber, l []byte, n *int) []byte {
	if m := bareFlagItem.FindSubmatchIndex(l); m != nil {
		if secretKey(string(l[m[2]:m[3]])) {
			s.next, s.nextOne = indentOf(l), true
		}
		return l
	}
	var out []byte
	last := 0
	for _, c := range keyCandidates(l, s.lower) {
		ks, ke := c[0], c[1]
		if ks < last || l[ks] != '-' || (ks > 0 && !bytes.ContainsAny(l[ks-1:ks], " \t\"'[,")) {
			continue
		}
		// The flag, then a space, or a closing quote, a comma and the next
		// string's opening quote.
		i := ke
		for i < len(l) && (l[i] == '\\' || l[i] == '"' || l[i] == '\'') {
			i++
		}
		quoted := i > ke
		sp := i
		for i < len(l) && (l[i] == ' ' || l[i] == '\t' || (quoted && l[i] == ',')) {
			i++
		}
		if i == sp || (quoted && !bytes.Contains(l[sp:i], []byte(","))) || i >= len(l) {
			continue
		}
		vs, ve, inner := valueAt(l, i)
		if ve <= vs || len(inner) == 0 || inner[0] == '-' || !secretKey(string(l[ks:ke])) || boolFlag(string(l[ks:ke])) {
			continue
		}
		if plainValue(string(inner)) || bytes.Contains(l[vs:ve], []byte(Redacted)) {
			continue
		}
		out = append(append(out, l[last:vs]...), quoteLike(l[vs:ve], Redacted)...)
		last = ve
		*n++
	}
	if out == nil {
		return l
	}
	return append(out, l[last:]...)
}

// boolFlag is a flag that names a secret but switches something on:
// --anonymous-auth, --skip-decrypt-auth, --enable-bootstrap-token-auth. The
// word after it is the next argument or prose, not its value.
func boolFlag(flag string) bool {
	words := splitWords(flag)
	return len(words) > 0 && words[len(words)-1] == "auth"
}

// redactKeyValues replaces the value after a key naming a secret and a
// separator (: or =), in any of the syntaxes listed in the rule table.
func redactKeyValues(s *scrubber, l []byte, n *int) []byte {
	var out []byte
	last := 0
	for _, c := range keyCandidates(l, s.lower) {
		ks, ke := c[0], c[1]
		if ks < last {
			continue
		}
		// The key must be whole: not the tail of a path or a longer word,
		// nor a shell expansion (${TOKEN:-x}, ${TOKEN:?}).
		if ks > 0 && !keyBoundary(l[ks-1]) || ks > 1 && l[ks-2] == '$' && l[ks-1] == '{' {
			continue
		}
		// Its closing quote (also \" inside a JSON string), spaces, the
		// separator, spaces.
		i := ke
		for i < len(l) && l[i] == '\\' {
			i++
		}
		if i < len(l) && (l[i] == '"' || l[i] == '\'') {
			i++
		} else {
			i = ke
		}
		sp := i
		for i < len(l) && (l[i] == ' ' || l[i] == '\t') {
			i++
		}
		if i >= len(l) || (l[i] != ':' && l[i] != '=') {
			continue
		}
		sep := l[i]
		if sep == ':' && i > sp {
			// `volume "token" : error` is prose (kubelet's events); YAML
			// and JSON writers put the colon right after the key.
			continue
		}
		i++
		if sep == ':' && i < len(l) && l[i] == ':' {
			continue // Go and C++ scopes: auth::Token
		}
		for i < len(l) && (l[i] == ' ' || l[i] == '\t') {
			i++
		}
		key := string(l[ks:ke])
		if !secretKey(key) {
			continue
		}
		vs, ve, inner := valueAt(l, i)
		if ve == vs {
			// Nothing after the separator: the value may be on the next
			// line (YAML, kubeadm's output).
			if sep == ':' && i >= len(l) {
				s.next = ks
			}
			continue
		}
		v := l[vs:ve]
		if v[0] == '=' || v[0] == '{' || v[0] == '[' {
			continue // ==, or a map or list whose own keys are checked
		}
		if len(v) <= 2 && (v[0] == '|' || v[0] == '>') && len(bytes.TrimSpace(l[ve:])) == 0 {
			// A YAML block scalar: its lines follow, deeper than the key.
			s.block = ks
			out = append(append(out, l[last:vs]...), Redacted...)
			last = ve
			*n++
			continue
		}
		if bytes.Contains(v, []byte(Redacted)) || plainValue(string(inner)) || keyedRef(key, inner) {
			continue
		}
		out = append(append(out, l[last:vs]...), quoteLike(v, Redacted)...)
		last = ve
		*n++
	}
	if out == nil {
		return l
	}
	return append(out, l[last:]...)
}

func keyBoundary(c byte) bool {
	return !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-' || c == '/')
}

// keyedRef: klog writes object references as secret="ns/name"; the name of
// a Secret is not its value.
func keyedRef(key string, v []byte) bool {
	return strings.EqualFold(key, "secret") && objectRef.Match(v)
}

var objectRef = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)

// plainValue is a value that cannot be a credential, so it stays: empty,
// booleans and null, short numbers (counts, ports, TTLs), references to
// variables ($X, ${X}, $(X), {{ .X }}, <placeholder>), absolute paths and
// key or config file names (where a credential is, not what it is), and
// values already redacted.
func plainValue(v string) bool {
	v = strings.TrimSpace(v)
	// An HTTP auth scheme is not the credential: look at what follows it.
	if scheme, rest, ok := strings.Cut(v, " "); ok && authScheme(scheme) {
		v = strings.TrimSpace(rest)
	}
	if v == "" || strings.Contains(v, Redacted) || v == redactedB64 {
		return true
	}
	switch strings.ToLower(v) {
	case "true", "false", "null", "nil", "<nil>", "~", "yes", "no", "on", "off", "none", "[]", "{}", `""`, "''":
		return true
	}
	if strings.HasPrefix(v, "$") || strings.HasPrefix(v, "{{") || strings.HasPrefix(v, "<") {
		return true // a variable, a template, a <placeholder>
	}
	if len(v) < 6 && strings.Trim(v, "0123456789") == "" {
		return true
	}
	return absPath.MatchString(v) || fileName.MatchString(v)
}

var (
	absPath = regexp.MustCompile(`^/[A-Za-z0-9._/-]*$`)
	// fileName is a relative path to a key, certificate or config file
	// (cfssl -ca-key=ca-key.pem): where the secret is, not the secret.
	fileName = regexp.MustCompile(`^[A-Za-z0-9._/-]+\.(?:pem|key|crt|cert|der|p12|pfx|jks|json|yaml|yml|conf|toml|txt|csv)$`)
)

// secretKey says whether a key (a map key, a flag, an env name) names a
// secret. The key is split into words (camelCase, snake_case, kebab-case,
// dots); trailing words that only say how it is encoded (data, b64, value)
// are dropped; then the last word decides, because it is what the value
// is: tokenFile is a file, secretName a name, secretKeyRef a reference,
// automountServiceAccountToken a token (its false stays as plainValue).
//
// `key` alone is not a secret: it is the name of a key in configMapKeyRef,
// secretKeyRef, tolerations, label selectors and klog's key="ns/name".
// A qualified key is (apiKey, private_key, client-key-data, tls.key,
// AWS_SECRET_ACCESS_KEY, certificateKey).
func secretKey(name string) bool {
	words := splitWords(name)
	for len(words) > 1 && encodingWords[words[len(words)-1]] {
		words = words[:len(words)-1]
	}
	if len(words) == 0 || notSecret[strings.Join(words, "-")] {
		return false
	}
	last := strings.TrimRight(words[len(words)-1], "0123456789")
	if last == "pass" {
		// DB_PASS, SMTP_PASS; a lone PASS is a test result (--- PASS:).
		return len(words) > 1
	}
	if secretWords[last] {
		return true
	}
	for _, suf := range secretSuffixes {
		if strings.HasSuffix(last, suf) {
			return true
		}
	}
	if last == "key" || last == "keys" {
		return len(words) > 1 && keyQualifiers[words[len(words)-2]]
	}
	if q, ok := strings.CutSuffix(last, "key"); ok && keyQualifiers[q] {
		return true
	}
	return false
}

var (
	secretWords = set("password", "passwords", "passwd", "pwd", "passphrase", "secret", "secrets",
		"token", "tokens", "auth", "credential", "credentials", "creds", "cred", "authorization", "cookie",
		"cookies", "apikey", "apikeys")
	// Compound single words: identitytoken, registrytoken, oauth,
	// basicauth, dbpassword, clientsecret.
	secretSuffixes = []string{"password", "passwd", "secret", "token", "auth", "apikey"}
	keyQualifiers  = set("api", "access", "secret", "private", "client", "signing", "encryption", "encrypt",
		"decrypt", "master", "session", "ssh", "certificate", "license", "auth", "account", "shared", "hmac",
		"tls", "ca", "sa", "gpg", "pgp", "deploy", "root", "storage", "subscription", "jwt", "webhook")
	encodingWords = set("data", "b64", "base64", "value", "string", "raw", "enc", "encoded")
	// notSecret are keys whose last word names a secret but whose value is
	// not one: etcd's initial-cluster-token is the cluster's name.
	notSecret = set("initial-cluster-token")
)

func set(words ...string) map[string]bool {
	m := make(map[string]bool, len(words))
	for _, w := range words {
		m[w] = true
	}
	return m
}

// splitWords splits an identifier into lower-case words: DB_PASSWORD,
// dbPassword, db-password, db.password and APIKey all give their words.
func splitWords(s string) []string {
	var words []string
	var cur []rune
	rs := []rune(s)
	flush := func() {
		if len(cur) > 0 {
			words = append(words, strings.ToLower(string(cur)))
			cur = cur[:0]
		}
	}
	for i, r := range rs {
		if !unicode.IsLetter(r) && !unicode.IsDigit(r) {
			flush()
			continue
		}
		if unicode.IsUpper(r) && len(cur) > 0 {
			prev := rs[i-1]
			nextLower := i+1 < len(rs) && unicode.IsLower(rs[i+1])
			if unicode.IsLower(prev) || unicode.IsDigit(prev) || (unicode.IsUpper(prev) && nextLower) {
				flush()
			}
		}
		cur = append(cur, r)
	}
	flush()
	return words
}

// redactions turns counts by rule into manifest entries for one file.
func redactions(file string, found map[string]int) []Redaction {
	var out []Redaction
	for what, n := range found {
		if n > 0 {
			out = append(out, Redaction{File: file, What: what, Count: n})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].What < out[j].What })
	return out
}

func merge(dst, src map[string]int) {
	for k, v := range src {
		dst[k] += v
	}
}
