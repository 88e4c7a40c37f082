package kit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kindlab/kindlab/provision/internal/filelock"
	"github.com/kindlab/kindlab/provision/registry"
	"github.com/kindlab/kindlab/provision/state"
)

// Alias says under which tag a kit loaded an image the lab names by
// digest. `docker load` cannot record a repository digest (only a pull
// does), so the engine does not find kindest/node:v1.31.14@sha256:… after
// a load; the alias lets up hand kind the tag instead, once it has checked
// the tag still is the very image (same ID) the kit carried.
type Alias struct {
	Reference string `json:"reference"`
	Tag       string `json:"tag"`
	ImageID   string `json:"imageID"`
}

func aliasFile(store state.Store) string { return filepath.Join(store.Root, "images.json") }

func loadAliases(store state.Store) (map[string]Alias, error) {
	out := map[string]Alias{}
	b, err := state.ReadFile(aliasFile(store))
	if errors.Is(err, os.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, &state.BadFileError{File: aliasFile(store), Reason: "not kindlab's image aliases: " + err.Error()}
	}
	return out, nil
}

// saveAlias adds an alias to images.json. Two kit loads at once must not
// lose each other's aliases, so the read-modify-write holds a lock on
// images.json.lock; the write itself is atomic, so LocalImage never reads
// half a file.
func saveAlias(ctx context.Context, store state.Store, a Alias) error {
	if err := os.MkdirAll(store.Root, 0o755); err != nil {
		return fmt.Errorf("record image alias: %w", err)
	}
	lock, err := filelock.Lock(ctx, aliasFile(store)+".lock", -1, nil)
	if err != nil {
		return fmt.Errorf("record image alias: %w", err)
	}
	defer filelock.Unlock(lock)
	all, err := loadAliases(store)
	if err != nil {
		return err
	}
	all[a.Reference] = a
	b, err := json.MarshalIndent(all, "", "  ")
	if err != nil {
		return err
	}
	return state.WriteFile(aliasFile(store), string(b)+"\n")
}

// LocalImage is what to give the Docker engine for ref: ref itself when
// the engine knows it (or has no alias for it), else the tag a kit loaded
// it under, if that tag still is the image the kit verified. With a nil d
// (no engine to ask) it is ref.
func LocalImage(ctx context.Context, d registry.Docker, store state.Store, ref string) string {
	aliases, err := loadAliases(store)
	if err != nil {
		return ref
	}
	a, ok := aliases[ref]
	if !ok {
		return ref
	}
	if d == nil {
		return ref // no engine to ask
	}
	if _, err := d.ImageInspect(ctx, ref); err == nil {
		return ref
	}
	if ins, err := d.ImageInspect(ctx, a.Tag); err == nil && ins.ID == a.ImageID {
		return a.Tag
	}
	return ref
}

// HasAlias reports whether a kit load recorded a tag for ref, without
// asking any engine (LocalImage then asks whether the tag still holds).
func HasAlias(store state.Store, ref string) bool {
	aliases, err := loadAliases(store)
	if err != nil {
		return false
	}
	_, ok := aliases[ref]
	return ok
}
