package console

import (
	"regexp"
	"strings"
)

// Step is one numbered step of a lab's instructions: its text and the
// commands to type, already naming the attendee's cluster.
type Step struct {
	Lab      string   `json:"lab"`
	Number   string   `json:"number"`
	Text     string   `json:"text"`
	Commands []string `json:"commands,omitempty"`
}

var (
	stepStart = regexp.MustCompile(`^(\s*)(\d+)\.\s+(.*)$`)
	// A command inline in a step's text: "Prove it: kindlab check x".
	inlineCommand = regexp.MustCompile(`^(.*?):\s+((?:kubectl|kindlab|docker|curl|[A-Z]+=\$\()\S*.*)$`)
	kubectlWord   = regexp.MustCompile(`(^|[\s;|&($])kubectl(\s)`)
)

// Steps turns a cluster's instructions into steps. The instructions are
// free text, as the lab files write them: "N. text" starts a step, lines
// indented deeper than its text are commands (consecutive ones form one
// block, so a heredoc stays whole), others continue its text. Text before
// the first step becomes a step of its own. Commands are rewritten for the
// cluster: kubectl gets --context, node names of the instruction's lab
// (LAB-worker) become the cluster's, and `kindlab check|reset LAB` names
// the cluster.
func Steps(c Cluster) []Step {
	var out []Step
	for _, in := range c.Instructions {
		var cur *Step
		textIndent := 0
		// heading is the step's first line as written: when prose follows
		// a command taken out of it, the command was part of a sentence,
		// which is put back whole (the command stays as a block too).
		heading, inlined := "", false
		var block []string
		flush := func() {
			if cur != nil && len(block) > 0 {
				cur.Commands = append(cur.Commands, rewrite(strings.Join(block, "\n"), in.Lab, c))
			}
			block = nil
		}
		for _, line := range strings.Split(strings.TrimRight(in.Text, "\n"), "\n") {
			if m := stepStart.FindStringSubmatch(line); m != nil {
				flush()
				out = append(out, Step{Lab: in.Lab, Number: m[2], Text: m[3]})
				cur = &out[len(out)-1]
				textIndent = len(m[1]) + len(m[2]) + 2
				heading, inlined = m[3], false
				if im := inlineCommand.FindStringSubmatch(m[3]); im != nil {
					cur.Text = im[1] + ":"
					cur.Commands = append(cur.Commands, rewrite(im[2], in.Lab, c))
					inlined = true
				}
				continue
			}
			if strings.TrimSpace(line) == "" {
				continue
			}
			if cur == nil {
				out = append(out, Step{Lab: in.Lab, Text: strings.TrimSpace(line)})
				cur = &out[len(out)-1]
				textIndent = indent(line)
				continue
			}
			if indent(line) > textIndent {
				// Keep the block's own indentation relative to its first line.
				block = append(block, line)
				continue
			}
			flush()
			if inlined {
				cur.Text, inlined = heading, false
			}
			cur.Text += " " + strings.TrimSpace(line)
		}
		flush()
	}
	for i := range out {
		for j, cmd := range out[i].Commands {
			out[i].Commands[j] = dedent(cmd)
		}
	}
	return out
}

func indent(s string) int { return len(s) - len(strings.TrimLeft(s, " \t")) }

// dedent removes the indentation common to a block's lines.
func dedent(block string) string {
	lines := strings.Split(block, "\n")
	least := -1
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			continue
		}
		if n := indent(l); least < 0 || n < least {
			least = n
		}
	}
	for i, l := range lines {
		if len(l) >= least && least > 0 {
			lines[i] = l[least:]
		}
	}
	return strings.Join(lines, "\n")
}

// rewrite makes a command of lab's instructions name cluster c.
func rewrite(cmd, lab string, c Cluster) string {
	// The names go into a replacement template, where "$" expands:
	// escaped, they come out as written.
	if c.Context != "" {
		cmd = kubectlWord.ReplaceAllString(cmd, "${1}kubectl --context "+escapeTemplate(c.Context)+"${2}")
	}
	if lab != "" && lab != c.Name {
		nodes := regexp.MustCompile(`\b` + regexp.QuoteMeta(lab) + `-(control-plane|worker\d*)\b`)
		cmd = nodes.ReplaceAllString(cmd, escapeTemplate(c.Name)+"-${1}")
	}
	if lab != "" {
		verbs := regexp.MustCompile(`\bkindlab (check|reset) ` + regexp.QuoteMeta(lab) + `\b`)
		cmd = verbs.ReplaceAllStringFunc(cmd, func(m string) string {
			verb := strings.Fields(m)[1]
			out := "kindlab " + verb + " " + c.Lab + " --name " + c.Name
			if verb == "check" && lab != c.Lab && contains(c.Checks, lab) {
				out += " --only " + lab
			}
			return out
		})
	}
	return cmd
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// escapeTemplate makes s stand for itself in a regexp replacement template.
func escapeTemplate(s string) string { return strings.ReplaceAll(s, "$", "$$") }
