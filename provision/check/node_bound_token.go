package check

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
)

func init() {
	register(definition{
		name: "node-bound-token", feature: "Node-bound service account tokens (beta)", position: 60,
		// It creates a throw-away Node object for a moment, which a check
		// picking a node from the API's list could pick. No kubelet runs it:
		// the TaintNodesByCondition admission plugin taints it not-ready
		// NoSchedule and it has no capacity, so only DaemonSets tolerating
		// every taint get a pod there, which never starts and goes with it.
		changes: []Resource{NodeObjects},
		run:     checkNodeBoundToken,
	})
}

const (
	tokenNamespace = "kindlab-node-bound-token"
	tokenSA        = "token-demo"
	// unseenTokens is how many tokens the check can review for the first
	// time after the node is deleted: poll's first waits (0.1 s, growing
	// to 0.5 s) span about 2.5 s over these, far longer than the
	// apiserver's informer takes to see a deletion.
	unseenTokens = 8
)

// checkNodeBoundToken binds a token to a throw-away Node object (never a
// real node: the check deletes it), reads the node from the token's claims,
// and proves the apiserver stops accepting the token once the node is gone.
func checkNodeBoundToken(ctx context.Context, c *run) (err error) {
	cs := c.client()
	if _, err := cs.CoreV1().ServiceAccounts(tokenNamespace).Get(ctx, tokenSA, metav1.GetOptions{}); err != nil {
		return fmt.Errorf("service account %s/%s: %w (apply the node-bound-token workload first)", tokenNamespace, tokenSA, err)
	}
	// A run killed before its cleanup left its Node, which DaemonSets
	// would count; one younger than a few minutes may be another run's,
	// going on now (a console's, a second `kindlab check`).
	left, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: probeLabel + "=node-bound-token"})
	if err != nil {
		return fmt.Errorf("list probe Nodes: %w", err)
	}
	for _, n := range left.Items {
		if time.Since(n.CreationTimestamp.Time) < 5*time.Minute {
			continue
		}
		if err := cs.CoreV1().Nodes().Delete(ctx, n.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete probe Node %s left by an earlier run: %w", n.Name, err)
		}
		c.detail("deleted probe Node %s, left by an earlier run", n.Name)
	}
	node, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name:   "kindlab-token-probe-" + rand.String(5),
		Labels: map[string]string{probeLabel: "node-bound-token"},
	}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create probe node: %w", err)
	}
	deleted := false
	defer func() {
		if deleted {
			return
		}
		cctx, cancel := cleanupContext(ctx)
		defer cancel()
		if derr := cs.CoreV1().Nodes().Delete(cctx, node.Name, metav1.DeleteOptions{}); derr != nil && !apierrors.IsNotFound(derr) {
			joinCleanup(&err, fmt.Errorf("delete probe node %s: %w", node.Name, derr))
		}
	}()
	c.detail("created probe Node %s", node.Name)

	exp := int64(600)
	mint := func() (*authenticationv1.TokenRequest, error) {
		tr, err := cs.CoreV1().ServiceAccounts(tokenNamespace).CreateToken(ctx, tokenSA, &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{
				ExpirationSeconds: &exp,
				BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Node", APIVersion: "v1", Name: node.Name, UID: node.UID},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("TokenRequest bound to Node %s refused: %w", node.Name, err)
		}
		return tr, nil
	}
	tr, err := mint()
	if err != nil {
		return err
	}
	// More tokens bound to the same node, each reviewed at most once, after
	// the node is deleted: kube-apiserver caches a successful token
	// authentication for 10 s (TokenSuccessCacheTTL,
	// pkg/kubeapiserver/options/authentication.go), so the first token,
	// reviewed while the node exists, would be accepted until that expires,
	// and the check would prove the cache, not the binding. Likewise a
	// review that comes before the apiserver's Node informer has seen the
	// deletion succeeds and is cached: retrying with the same token waited
	// out those 10 s; the next attempt takes a token not yet seen.
	unseen := make([]string, unseenTokens)
	for i := range unseen {
		t, err := mint()
		if err != nil {
			return err
		}
		unseen[i] = t.Status.Token
	}
	claims, err := jwtClaims(tr.Status.Token)
	if err != nil {
		return err
	}
	var bound struct {
		K8s struct {
			Node *struct {
				Name string `json:"name"`
				UID  string `json:"uid"`
			} `json:"node"`
		} `json:"kubernetes.io"`
	}
	if err := json.Unmarshal(claims, &bound); err != nil {
		return fmt.Errorf("token claims: %w", err)
	}
	if bound.K8s.Node == nil {
		return fmt.Errorf("token claims carry no kubernetes.io.node: the apiserver ignored the Node binding (claims: %s)", claims)
	}
	if bound.K8s.Node.Name != node.Name || bound.K8s.Node.UID != string(node.UID) {
		return fmt.Errorf("token claims name node %s (uid %s), want %s (uid %s)", bound.K8s.Node.Name, bound.K8s.Node.UID, node.Name, node.UID)
	}
	c.detail("token claims kubernetes.io.node = {name: %s, uid: %s}", bound.K8s.Node.Name, bound.K8s.Node.UID)

	review := func(ctx context.Context, token string) (*authenticationv1.TokenReviewStatus, error) {
		r, err := cs.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
			Spec: authenticationv1.TokenReviewSpec{Token: token},
		}, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("TokenReview: %w", err)
		}
		return &r.Status, nil
	}
	st, err := review(ctx, tr.Status.Token)
	if err != nil {
		return err
	}
	if !st.Authenticated {
		return fmt.Errorf("token bound to the existing Node %s is not accepted: %s", node.Name, st.Error)
	}
	c.detail("TokenReview while the node exists: authenticated as %s", st.User.Username)

	if err := cs.CoreV1().Nodes().Delete(ctx, node.Name, metav1.DeleteOptions{}); err != nil {
		return fmt.Errorf("delete probe node %s: %w", node.Name, err)
	}
	deleted = true
	var last string
	attempt := 0
	err = poll(ctx, 500*time.Millisecond, 30*time.Second, func(ctx context.Context) (bool, string, error) {
		// Once every token has been seen, the last one's cached success
		// runs out within 10 s of its review.
		token := unseen[min(attempt, len(unseen)-1)]
		attempt++
		st, err := review(ctx, token)
		if err != nil {
			return false, "", err
		}
		last = st.Error
		return !st.Authenticated, "a token bound to the Node is still authenticated after the Node was deleted", nil
	})
	if err != nil {
		return err
	}
	c.detail("TokenReview of another token bound to the node, after the node was deleted: unauthenticated (%s; on review %d after the deletion)", last, attempt)
	return nil
}

// jwtClaims returns a JWT's payload; the apiserver signed it, so it is
// decoded, not verified (the TokenReview does that).
func jwtClaims(token string) ([]byte, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("token is not a JWT (%d parts)", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("token payload: %w", err)
	}
	return b, nil
}
