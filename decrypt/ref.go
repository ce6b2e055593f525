package decrypt

// MessageRef names one message of one user's mailbox. It mirrors proxy.MessageRef until package proxy lands;
// then this becomes an alias.
type MessageRef struct {
	User, Mailbox    string
	UIDValidity, UID uint32
}
