package check

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

func init() {
	register(definition{
		name: "anonymous-auth", feature: "Anonymous auth for chosen endpoints (AnonymousAuthConfigurableEndpoints, alpha)", position: 110,
		// It binds broad rights to system:anonymous for a moment (a fixed
		// ClusterRole/ClusterRoleBinding name, so two runs collide). No other
		// check makes anonymous requests.
		changes: []Resource{AnonymousRBAC},
		run:     checkAnonymousAuth,
	})
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
	// /livez answers 500 for a moment when one of kube-apiserver's own
	// health checks fails (etcd on a loaded machine): that request was let
	// through, which is what the check asks; only 401 or 403 is a refusal.
	err = poll(ctx, 500*time.Millisecond, 15*time.Second, func(ctx context.Context) (bool, string, error) {
		code, err := get(ctx, "/livez")
		switch {
		case err != nil:
			return false, "", err
		case code == http.StatusOK:
			return true, "", nil
		case code >= 500:
			return false, fmt.Sprintf("anonymous GET /livez answered %d: kube-apiserver's own health checks fail", code), nil
		}
		return false, "", fmt.Errorf("anonymous GET /livez answered %d, want 200: anonymous /livez stopped answering", code)
	})
	if err != nil {
		return err
	}
	c.detail("with the binding: anonymous GET /api: 401, /livez: 200")
	return nil
}
