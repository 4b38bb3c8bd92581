//go:build tools

// Package tools pins etcd at the minor Kubernetes v1.34 is tested with (3.6).
package tools

import _ "go.etcd.io/etcd/server/v3"
