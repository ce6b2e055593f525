package decrypt

import "github.com/smimeproxy/smimeproxy/proxy"

// MessageRef names one message of one user's mailbox (the proxy's type).
type MessageRef = proxy.MessageRef

var _ proxy.Rewriter = (*Decrypter)(nil)
