package decrypt

import "github.com/smimeproxy/smimeproxy/internal/rewriting"

// MessageRef names one message of one user's mailbox (the type proxy.Rewriter is called with).
type MessageRef = rewriting.MessageRef
