package engine

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ThawFrozen thaws every cgroup v1 freezer cgroup at or below the
// container's that is FROZEN or FREEZING, and returns how many it thawed.
//
// Why: on cgroup v1, runc freezes a container's cgroup while it sets the
// container's resources or signals its processes. A kind node killed in
// that window (kind delete right after the nodes started pods: the node's
// own runc dies with the node) leaves a pod's cgroup frozen inside the
// node's. Its processes then sit in the kernel's refrigerator, cannot die,
// and the engine cannot remove the node: "tried to kill container, but did
// not receive an exit event" (seen here with dockerd 20.10, runc 1.1.5 on
// the host and the node's runc). Thawing lets them die.
//
// Only a local engine's cgroups can be reached (this machine's /proc and
// /sys/fs/cgroup); on a remote engine, on cgroup v2 (no freezer files) or
// for a container that is not running it does nothing and returns 0.
func (e *Engine) ThawFrozen(ctx context.Context, id string) (int, error) {
	if e.ep.Remote() {
		return 0, nil
	}
	ins, err := e.client.ContainerInspect(ctx, id)
	if err != nil {
		return 0, fmt.Errorf("thaw %s: %w", id, err)
	}
	if ins.State == nil || ins.State.Pid == 0 {
		return 0, nil
	}
	dir, err := freezerDir(ins.State.Pid)
	if err != nil || dir == "" {
		return 0, err
	}
	n := 0
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // a cgroup that went while we walked
			}
			return err
		}
		if d.IsDir() || d.Name() != "freezer.state" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		if s := strings.TrimSpace(string(b)); s != "FROZEN" && s != "FREEZING" {
			return nil
		}
		if err := os.WriteFile(path, []byte("THAWED"), 0); err != nil {
			return fmt.Errorf("thaw %s: %w", filepath.Dir(path), err)
		}
		n++
		return nil
	})
	return n, err
}

// freezerDir is the directory of pid's freezer cgroup on this machine
// ("" when there is no cgroup v1 freezer): the freezer line of
// /proc/PID/cgroup joined to where the freezer hierarchy is mounted
// (/proc/self/mountinfo).
func freezerDir(pid int) (string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return "", nil // not Linux, or the process is gone
	}
	rel := ""
	for _, l := range strings.Split(string(b), "\n") {
		// hierarchy-ID:controller-list:cgroup-path
		parts := strings.SplitN(l, ":", 3)
		if len(parts) == 3 && hasController(parts[1], "freezer") {
			rel = parts[2]
		}
	}
	if rel == "" {
		return "", nil
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID parentID major:minor root mountpoint options [optional…] - fstype source superoptions
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		fields, super := strings.Fields(pre), strings.Fields(post)
		if len(fields) < 5 || len(super) < 3 || super[0] != "cgroup" || !hasController(super[2], "freezer") {
			continue
		}
		root, mount := fields[3], fields[4]
		if r, ok := strings.CutPrefix(rel, root); ok && (root == "/" || r == "" || strings.HasPrefix(r, "/")) {
			if root == "/" {
				r = rel
			}
			return filepath.Join(mount, r), nil
		}
	}
	return "", sc.Err()
}

func hasController(list, name string) bool {
	for _, c := range strings.Split(list, ",") {
		if c == name {
			return true
		}
	}
	return false
}
