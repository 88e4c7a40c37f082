package cli

import (
	"context"
	"sync"

	"sigs.k8s.io/kind/pkg/log"

	"github.com/kindlab/kindlab/provision/cluster"
	"github.com/kindlab/kindlab/provision/engine"
)

// engineScope is one command's engine: opened on first use, so verbs that
// never reach Docker (or fail before) open none, and closed by Execute when
// the command ends.
type engineScope struct {
	mu  sync.Mutex
	e   *engine.Engine
	err error
	// opened says Open ran (e or err is its result).
	opened bool
	// provider is the --provider flag's value ("" when not given), set by
	// the root command before any verb runs.
	provider string
}

type engineScopeKey struct{}

func withEngineScope(ctx context.Context) (context.Context, func()) {
	sc := &engineScope{}
	return context.WithValue(ctx, engineScopeKey{}, sc), sc.close
}

func (sc *engineScope) get(ctx context.Context, opts []engine.Option) (*engine.Engine, error) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if !sc.opened {
		if sc.provider != "" {
			opts = append([]engine.Option{engine.WithProvider(sc.provider)}, opts...)
		}
		sc.e, sc.err = engine.Open(ctx, opts...)
		sc.opened = true
	}
	return sc.e, sc.err
}

func (sc *engineScope) close() {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.e != nil {
		_ = sc.e.Close()
	}
}

// SetProvider records the --provider flag's value for the command's
// engine (engine.WithProvider), before it is opened. Outside Execute it
// does nothing.
func SetProvider(ctx context.Context, provider string) {
	if sc, ok := ctx.Value(engineScopeKey{}).(*engineScope); ok {
		sc.mu.Lock()
		sc.provider = provider
		sc.mu.Unlock()
	}
}

// ProviderFlag is the --provider flag's value recorded by SetProvider ("":
// not given, so KIND_EXPERIMENTAL_PROVIDER decides).
func ProviderFlag(ctx context.Context) string {
	if sc, ok := ctx.Value(engineScopeKey{}).(*engineScope); ok {
		sc.mu.Lock()
		defer sc.mu.Unlock()
		return sc.provider
	}
	return ""
}

// Engine is the command's engine (package engine), opened on the first
// call with opts (a later call's opts are ignored: one command, one
// engine; so a verb's kind logger goes through Provider, not an option)
// and closed when Execute returns. Its error is what engine.Open returned,
// reported as engine.Unreachable: one line wrapping engine.ErrNoEngine
// with the fix. Outside Execute (a test driving a cobra command itself)
// each call opens an engine that is closed when ctx is done.
func Engine(ctx context.Context, opts ...engine.Option) (*engine.Engine, error) {
	sc, ok := ctx.Value(engineScopeKey{}).(*engineScope)
	if !ok {
		sc = &engineScope{}
		context.AfterFunc(ctx, sc.close)
	}
	e, err := sc.get(ctx, opts)
	if err != nil {
		return nil, engine.Unreachable(err)
	}
	return e, nil
}

// ReachableEngine is Engine once the engine has answered a ping
// (engine.Ping: within 20 seconds), for verbs that go on to talk to it: an
// endpoint that accepts connections and never answers (a wrong DOCKER_HOST
// port, a hung daemon) would otherwise hold them without a word. Its error
// is one line wrapping engine.ErrNoEngine, with the fix, and exit code 4.
func ReachableEngine(ctx context.Context) (*engine.Engine, error) {
	e, err := Engine(ctx)
	if err != nil {
		return nil, WithCode(ExitNoDocker, err)
	}
	if err := e.Ping(ctx); err != nil {
		return nil, WithCode(ExitNoDocker, err)
	}
	return e, nil
}

// Provider is kind's provider over the command's engine, once the engine
// answers, with kind's progress going to logger (nil: nowhere). Its error
// wraps engine.ErrNoEngine when no engine can be found or answers.
//
// The logger is applied here rather than as an Open option: the engine may
// have been opened already (rendering the lab resolves the endpoint for a
// remote engine's API server address), and kind's progress must not be
// lost to that.
func Provider(ctx context.Context, logger log.Logger) (*cluster.Provider, error) {
	e, err := Engine(ctx)
	if err != nil {
		return nil, err
	}
	p, err := cluster.New(ctx, e)
	if err != nil || logger == nil {
		return p, err
	}
	return p.WithLogger(logger), nil
}

// ProviderFunc is Provider without a logger, for running.Open: called only
// once the request is known to be good, its error carrying ExitNoDocker.
func ProviderFunc(ctx context.Context) func() (*cluster.Provider, error) {
	return func() (*cluster.Provider, error) {
		p, err := Provider(ctx, nil)
		if err != nil {
			return nil, WithCode(ExitNoDocker, err)
		}
		return p, nil
	}
}
