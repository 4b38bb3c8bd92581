//go:build tools

// Package tools pins livekit-server so `go build` can build its server command from the module cache.
// v1.13.5 is the newest release whose go.mod has no `replace` lines pointing at forks the module proxy
// does not serve (v1.13.6+ replace pion/webrtc, dtls and ice with livekit forks that are unavailable).
package tools

import _ "github.com/livekit/livekit-server/cmd/server"
