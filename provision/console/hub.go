package console

import (
	"sync"
	"time"
)

// Event is one server-sent event: a check started or ended ("check", with
// Result), a line of the activity log ("line"), a line an up, down, reset
// or replay of Cluster printed, as it printed it, or its start or end line
// ("progress", shown under the cluster), or the list of clusters changed
// ("clusters": reload).
type Event struct {
	Type    string    `json:"type"`
	Cluster string    `json:"cluster,omitempty"`
	Result  *Result   `json:"result,omitempty"`
	Line    string    `json:"line,omitempty"`
	Time    time.Time `json:"time,omitzero"`
}

// hub fans events out to the open event streams. A subscriber that falls
// more than its buffer behind is dropped (its stream ends and the browser's
// EventSource reconnects and reloads the state), so a stalled page never
// holds up the others.
type hub struct {
	mu   sync.Mutex
	subs map[*subscriber]struct{}
}

type subscriber struct {
	sc scope
	ch chan Event
	// gone is closed when the hub drops the subscriber.
	gone chan struct{}
}

func newHub() *hub { return &hub{subs: map[*subscriber]struct{}{}} }

func (h *hub) subscribe(sc scope) *subscriber {
	sub := &subscriber{sc: sc, ch: make(chan Event, 256), gone: make(chan struct{})}
	h.mu.Lock()
	h.subs[sub] = struct{}{}
	h.mu.Unlock()
	return sub
}

func (h *hub) unsubscribe(sub *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[sub]; ok {
		delete(h.subs, sub)
		close(sub.gone)
	}
}

// publish sends e to every subscriber whose scope covers its cluster (an
// event of no cluster, such as "clusters", goes to the instructor only,
// except a reload, which every page takes).
func (h *hub) publish(e Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for sub := range h.subs {
		if e.Cluster == "" && !sub.sc.all && e.Type != "clusters" {
			continue
		}
		if e.Cluster != "" && !sub.sc.allows(e.Cluster) {
			continue
		}
		select {
		case sub.ch <- e:
		default:
			delete(h.subs, sub)
			close(sub.gone)
		}
	}
}

// count is the number of open streams (tests).
func (h *hub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}
