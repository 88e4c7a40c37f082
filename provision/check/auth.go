package check

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/rest"
)

const (
	tokenNamespace = "kindlab-node-bound-token"
	tokenSA        = "token-demo"
)

// checkNodeBoundToken binds a token to a throw-away Node object (never a
// real node: the check deletes it), reads the node from the token's claims,
// and proves the apiserver stops accepting the token once the node is gone.
func checkNodeBoundToken(ctx context.Context, c *run) (err error) {
	cs := c.client()
	if _, err := cs.CoreV1().ServiceAccounts(tokenNamespace).Get(ctx, tokenSA, metav1.GetOptions{}); err != nil {
		return fmt.Errorf("service account %s/%s: %w (apply the node-bound-token workload first)", tokenNamespace, tokenSA, err)
	}
	node, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name:   "kindlab-token-probe-" + rand.String(5),
		Labels: map[string]string{"kindlab.dev/probe": "node-bound-token"},
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
	tr, err := cs.CoreV1().ServiceAccounts(tokenNamespace).CreateToken(ctx, tokenSA, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			ExpirationSeconds: &exp,
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Node", APIVersion: "v1", Name: node.Name, UID: node.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("TokenRequest bound to Node %s refused: %w", node.Name, err)
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

	review := func(ctx context.Context) (*authenticationv1.TokenReviewStatus, error) {
		r, err := cs.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
			Spec: authenticationv1.TokenReviewSpec{Token: tr.Status.Token},
		}, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("TokenReview: %w", err)
		}
		return &r.Status, nil
	}
	st, err := review(ctx)
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
	err = poll(ctx, 500*time.Millisecond, 30*time.Second, func(ctx context.Context) (bool, string, error) {
		st, err := review(ctx)
		if err != nil {
			return false, "", err
		}
		last = st.Error
		return !st.Authenticated, "token still authenticated after its Node was deleted", nil
	})
	if err != nil {
		return err
	}
	c.detail("TokenReview after the node was deleted: unauthenticated (%s)", last)
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

const anonymousProbe = "kindlab-anonymous-probe"

// checkAnonymousAuth proves the AuthenticationConfiguration's anonymous
// conditions: anonymous requests authenticate only on the listed paths, so
// even RBAC rights granted to system:anonymous cannot open /api.
func checkAnonymousAuth(ctx context.Context, c *run) (err error) {
	if c.env.Config == nil {
		return fmt.Errorf("anonymous requests need the cluster's address: Env.Config is nil")
	}
	hc, err := rest.HTTPClientFor(rest.AnonymousClientConfig(c.env.Config))
	if err != nil {
		return fmt.Errorf("anonymous client: %w", err)
	}
	host := strings.TrimSuffix(c.env.Config.Host, "/")
	get := func(ctx context.Context, path string) (int, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, host+path, nil)
		if err != nil {
			return 0, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, fmt.Errorf("anonymous GET %s: %w", path, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	expect := func(ctx context.Context, path string, want int, explain string) error {
		code, err := get(ctx, path)
		if err != nil {
			return err
		}
		if code != want {
			return fmt.Errorf("anonymous GET %s answered %d, want %d: %s", path, code, want, explain)
		}
		return nil
	}
	if err := expect(ctx, "/livez", http.StatusOK, "anonymous requests are not allowed on /livez"); err != nil {
		return err
	}
	c.detail("anonymous GET /livez: 200")
	if err := expect(ctx, "/api", http.StatusUnauthorized,
		"anonymous requests are authenticated on every path (no AuthenticationConfiguration anonymous conditions in force)"); err != nil {
		return err
	}
	c.detail("anonymous GET /api: 401")

	cs := c.client()
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: anonymousProbe},
		Rules: []rbacv1.PolicyRule{
			{NonResourceURLs: []string{"*"}, Verbs: []string{"get"}},
			{APIGroups: []string{"*"}, Resources: []string{"*"}, Verbs: []string{"get", "list", "watch"}},
		},
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: anonymousProbe},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: anonymousProbe},
		Subjects: []rbacv1.Subject{
			{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: "system:anonymous"},
			{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: "system:unauthenticated"},
		},
	}
	defer func() {
		cctx, cancel := cleanupContext(ctx)
		defer cancel()
		for _, del := range []func() error{
			func() error {
				return cs.RbacV1().ClusterRoleBindings().Delete(cctx, anonymousProbe, metav1.DeleteOptions{})
			},
			func() error { return cs.RbacV1().ClusterRoles().Delete(cctx, anonymousProbe, metav1.DeleteOptions{}) },
		} {
			if derr := del(); derr != nil && !apierrors.IsNotFound(derr) {
				joinCleanup(&err, derr)
			}
		}
	}()
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create ClusterRole %s: %w", anonymousProbe, err)
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create ClusterRoleBinding %s: %w", anonymousProbe, err)
	}
	// The 401 only means something once RBAC really grants the access.
	err = poll(ctx, 500*time.Millisecond, 30*time.Second, func(ctx context.Context) (bool, string, error) {
		sar, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
			Spec: authorizationv1.SubjectAccessReviewSpec{
				User:                  "system:anonymous",
				Groups:                []string{"system:unauthenticated"},
				NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: "/api", Verb: "get"},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			return false, "", fmt.Errorf("SubjectAccessReview: %w", err)
		}
		return sar.Status.Allowed, "RBAC does not yet allow system:anonymous to get /api", nil
	})
	if err != nil {
		return err
	}
	c.detail("ClusterRoleBinding %s grants system:anonymous get on every path and resource (SubjectAccessReview allowed)", anonymousProbe)
	if err := expect(ctx, "/api", http.StatusUnauthorized,
		"with system:anonymous bound to broad rights, anonymous /api must still be unauthenticated"); err != nil {
		return err
	}
	if err := expect(ctx, "/livez", http.StatusOK, "anonymous /livez stopped answering"); err != nil {
		return err
	}
	c.detail("with the binding: anonymous GET /api: 401, /livez: 200")
	return nil
}
