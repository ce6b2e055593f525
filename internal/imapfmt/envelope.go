package imapfmt

// This file computes ENVELOPE (RFC 3501 section 7.4.2, RFC 9051 section 7.5.2) like Dovecot's
// message_part_envelope_parse_from_header, message_address_parse and imap_envelope_write.

// address is one address structure of an ENVELOPE address list. Groups (RFC 5322 section 3.4) are written as
// RFC 3501 describes: a start marker with the group name as mailbox and NIL host, the members, and an end
// marker of four NILs.
type address struct {
	name, route, mailbox, domain *string
}

// envelope holds the ENVELOPE fields; nil means NIL, an empty list means NIL too.
type envelope struct {
	date, subject                      *string
	from, sender, replyTo, to, cc, bcc []address
	inReplyTo, messageID               *string
}

// envelopeFields are the header fields ENVELOPE shows, in its order.
var envelopeFields = []string{"Date", "Subject", "From", "Sender", "Reply-To", "To", "Cc", "Bcc", "In-Reply-To",
	"Message-ID"}

// envelopeField returns the index in envelopeFields of the field name, or -1.
func envelopeField(name []byte) int {
	for i, f := range envelopeFields {
		if asciiEqualFold(name, f) {
			return i
		}
	}
	return -1
}

func isEnvelopeField(name []byte) bool { return envelopeField(name) >= 0 }

// mailLimits are the budgets that Debian's security updates of Dovecot 2.3.19 give the parse of one message
// (its header and all its parts): addresses in ENVELOPE structures, Content-Language tags and MIME
// parameters. What exceeds them is dropped.
type mailLimits struct {
	addresses, languages, params int
}

func newMailLimits() *mailLimits {
	return &mailLimits{addresses: 100000, languages: 100000, params: 200000}
}

// parseHeader takes one header line into the envelope. Date, Subject, In-Reply-To and Message-ID are kept
// verbatim (the last occurrence wins); address fields are parsed and repeated fields concatenated, as
// Dovecot does so that a second From cannot hide behind the first.
func (env *envelope) parseHeader(l *headerLine, lim *mailLimits) {
	if l.eoh || l.continues {
		return
	}
	var list *[]address
	var str **string
	switch envelopeField(l.name) {
	case 0:
		str = &env.date
	case 1:
		str = &env.subject
	case 2:
		list = &env.from
	case 3:
		list = &env.sender
	case 4:
		list = &env.replyTo
	case 5:
		list = &env.to
	case 6:
		list = &env.cc
	case 7:
		list = &env.bcc
	case 8:
		str = &env.inReplyTo
	case 9:
		str = &env.messageID
	default:
		return
	}
	if str != nil {
		v := headerStrdup(l.value)
		*str = &v
		return
	}
	addrs := parseAddressList(l.value, lim.addresses)
	lim.addresses -= len(addrs)
	*list = append(*list, addrs...)
}

// appendTo writes the envelope's fields without the surrounding parentheses.
func (env *envelope) appendTo(out []byte) []byte {
	out = appendNStringNoLF(out, env.date)
	out = append(out, ' ')
	if env.subject == nil {
		out = append(out, "NIL"...)
	} else {
		out = appendStringForHumans(out, *env.subject)
	}
	sender, replyTo := env.sender, env.replyTo
	if len(sender) == 0 {
		sender = env.from
	}
	if len(replyTo) == 0 {
		replyTo = env.from
	}
	for _, l := range [][]address{env.from, sender, replyTo, env.to, env.cc, env.bcc} {
		out = append(out, ' ')
		out = appendAddresses(out, l)
	}
	out = append(out, ' ')
	out = appendNStringNoLF(out, env.inReplyTo)
	out = append(out, ' ')
	return appendNStringNoLF(out, env.messageID)
}

func appendAddresses(out []byte, list []address) []byte {
	if len(list) == 0 {
		return append(out, "NIL"...)
	}
	out = append(out, '(')
	for _, a := range list {
		out = append(out, '(')
		if a.name == nil {
			out = append(out, "NIL"...)
		} else {
			out = appendStringForHumans(out, *a.name)
		}
		out = append(out, ' ')
		out = appendNString(out, a.route)
		out = append(out, ' ')
		out = appendNString(out, a.mailbox)
		out = append(out, ' ')
		out = appendNString(out, a.domain)
		out = append(out, ')')
	}
	return append(out, ')')
}

// Placeholders Dovecot fills in for the parts of an address it could not parse.
var (
	missingMailbox = "MISSING_MAILBOX"
	missingDomain  = "MISSING_DOMAIN"
	syntaxError    = "SYNTAX_ERROR"
	invalidRoute   = "INVALID_ROUTE"
	emptyString    = ""
)

func some(s []byte) *string {
	v := string(s)
	return &v
}

// addressParser parses an address-list (RFC 5322 section 3.4 with the obsolete syntax of section 4.4) and
// recovers from errors the way Dovecot's message-address.c does.
type addressParser struct {
	lx lexer
	// list holds the addresses so far; parsing stops when it has max.
	list    []address
	max     int
	addr    address
	invalid bool
	str     []byte
	comment []byte
}

// parseAddressList parses at most max addresses of a header value into ENVELOPE addresses, none for an empty
// value. Like Dovecot it counts a group as one address, so that the group markers and members can make more
// than max; Dovecot then fails an assertion and crashes, here the list is cut to max.
func parseAddressList(v []byte, max int) []address {
	p := &addressParser{lx: lexer{d: v, replaceNUL: true}, max: max}
	p.lx.lastComment = &p.comment
	if p.lx.skipLWSP() > 0 {
		p.parseList()
	}
	return p.list[:min(len(p.list), max)]
}

func (p *addressParser) add() {
	p.list = append(p.list, p.addr)
	p.addr, p.invalid = address{}, false
}

// addFixed adds the current address with placeholders for a missing mailbox or domain.
func (p *addressParser) addFixed() {
	if p.addr.mailbox == nil {
		p.addr.mailbox = &missingMailbox
		p.invalid = true
	}
	if p.addr.domain == nil || *p.addr.domain == "" {
		p.addr.domain = &missingDomain
		p.invalid = true
	}
	p.add()
}

// parseNonStrictDotAtom parses a local-part that may start or end with dots or contain ".." (common in
// Japan, and accepted by Dovecot).
func (p *addressParser) parseNonStrictDotAtom() int {
	ret := -1
	for {
		for p.lx.cur() == '.' && p.lx.more() {
			p.str = append(p.str, '.')
			p.lx.pos++
			if !p.lx.more() {
				return 0
			}
			ret = 1
		}
		if p.lx.cur() == '@' {
			break
		}
		ret = p.lx.parseAtom(&p.str)
		if ret <= 0 || p.lx.cur() != '.' {
			break
		}
	}
	return ret
}

func (p *addressParser) parseLocalPart() int {
	p.str = p.str[:0]
	var ret int
	if p.lx.cur() == '"' {
		ret = p.lx.parseQuotedString(&p.str)
	} else {
		ret = p.parseNonStrictDotAtom()
	}
	if ret < 0 {
		return -1
	}
	p.addr.mailbox = some(p.str)
	return ret
}

func (p *addressParser) parseDomain() int {
	p.str = p.str[:0]
	ret := p.lx.parseDomain(&p.str)
	if ret < 0 {
		return -1
	}
	p.addr.domain = some(p.str)
	return ret
}

// parseDomainList parses an obsolete source route (obs-domain-list, RFC 5322 section 4.4) into "@a,@b".
func (p *addressParser) parseDomainList() int {
	p.str = p.str[:0]
	for {
		if !p.lx.more() {
			return 0
		}
		if p.lx.cur() != '@' {
			break
		}
		if len(p.str) > 0 {
			p.str = append(p.str, ',')
		}
		p.str = append(p.str, '@')
		if ret := p.lx.parseDomain(&p.str); ret <= 0 {
			return ret
		}
		for p.lx.skipLWSP() > 0 && p.lx.cur() == ',' {
			p.lx.pos++
		}
	}
	p.addr.route = some(p.str)
	return 1
}

// parseAngleAddr parses "<" [route ":"] local-part "@" domain ">".
func (p *addressParser) parseAngleAddr() int {
	p.lx.pos++
	if p.lx.skipLWSP() <= 0 {
		return -1
	}
	if p.lx.cur() == '@' {
		if p.parseDomainList() > 0 && p.lx.cur() == ':' {
			p.lx.pos++
		} else {
			p.addr.route = &invalidRoute
			if !p.lx.more() {
				return -1
			}
		}
		if p.lx.skipLWSP() <= 0 {
			return -1
		}
	}
	if p.lx.cur() != '>' {
		if p.parseLocalPart() <= 0 {
			return -1
		}
		if p.lx.cur() == '@' && p.parseDomain() <= 0 {
			return -1
		}
	}
	if p.lx.cur() != '>' {
		return -1
	}
	p.lx.pos++
	return p.lx.skipLWSP()
}

// parseNameAddr parses [display-name] angle-addr.
func (p *addressParser) parseNameAddr() int {
	p.str = p.str[:0]
	if p.lx.parsePhrase(&p.str) <= 0 || p.lx.cur() != '<' {
		return -1
	}
	if len(p.str) > 0 {
		p.addr.name = some(p.str)
	}
	if p.parseAngleAddr() < 0 {
		p.addr.domain = &syntaxError
		p.invalid = true
	}
	return p.lx.status()
}

// parseAddrSpec parses local-part "@" domain; a comment after it becomes the display name, and words without
// "@" become a display name without mailbox.
func (p *addressParser) parseAddrSpec() int {
	p.comment = p.comment[:0]
	quoted := p.lx.cur() == '"'
	ret, ret2 := p.parseLocalPart(), -2
	if ret <= 0 {
		p.invalid = true
	}
	if ret != 0 && p.lx.more() && p.lx.cur() == '@' {
		ret2 = p.parseDomain()
		if ret2 <= 0 {
			ret = ret2
		}
	}
	if len(p.comment) > 0 {
		p.addr.name = some(p.comment)
	} else if ret2 == -2 {
		p.str = append(p.str, ' ')
		n := len(p.str)
		p.lx.parsePhrase(&p.str)
		if len(p.str) != n {
			p.addr.mailbox = nil
			p.addr.name = some(p.str)
		} else if !quoted {
			p.addr.domain = &emptyString
		}
		p.invalid = true
		ret = -1
	}
	return ret
}

func (p *addressParser) parseMailbox() int {
	start := p.lx.pos
	ret := p.parseNameAddr()
	if ret < 0 {
		p.lx.pos = start
		ret = p.parseAddrSpec()
		if p.invalid && p.addr.name == nil && p.addr.mailbox != nil && p.addr.domain == nil {
			p.addr.name, p.addr.mailbox = p.addr.mailbox, nil
		}
	}
	if ret < 0 {
		p.invalid = true
	}
	p.addFixed()
	return ret
}

// parseGroup parses display-name ":" [mailbox-list] ";"; it returns -1 only when the input is not a group.
func (p *addressParser) parseGroup() int {
	p.str = p.str[:0]
	if p.lx.parsePhrase(&p.str) <= 0 || p.lx.cur() != ':' {
		return -1
	}
	p.lx.pos++
	ret := p.lx.skipLWSP()
	if ret <= 0 {
		p.invalid = true
	}
	p.addr.mailbox = some(p.str)
	p.add()
	if ret > 0 && p.lx.cur() != ';' {
		for len(p.list) < p.max {
			p.parseMailbox()
			if !p.lx.more() || p.lx.cur() != ',' {
				break
			}
			p.lx.pos++
			if p.lx.skipLWSP() <= 0 {
				ret = -1
				break
			}
		}
	}
	if ret >= 0 {
		if !p.lx.more() || p.lx.cur() != ';' {
			ret = -1
		} else {
			p.lx.pos++
			ret = p.lx.skipLWSP()
		}
	}
	if ret < 0 {
		p.invalid = true
	}
	p.add()
	if ret == 0 {
		return 0
	}
	return 1
}

func (p *addressParser) parseAddress() int {
	start := p.lx.pos
	ret := p.parseGroup()
	if ret < 0 {
		p.lx.pos = start
		ret = p.parseMailbox()
	}
	return ret
}

func (p *addressParser) parseList() {
	for n := p.max; n > 0 && len(p.list) < p.max; n-- {
		if p.parseAddress() == 0 {
			return
		}
		if !p.lx.more() || p.lx.cur() != ',' {
			return
		}
		p.lx.pos++
		if ret := p.lx.skipLWSP(); ret <= 0 {
			if ret < 0 {
				// The list ends with garbage.
				p.addFixed()
			}
			return
		}
	}
}

// FirstAddress returns the first address of an address-list header value (its name, mailbox and domain, nil
// when absent) as Dovecot's message_address_parse with max_addresses 1 and MESSAGE_ADDRESS_PARSE_FLAG_FILL_MISSING
// gives it, which its SORT keys FROM, TO, CC (RFC 5256) and DISPLAYFROM, DISPLAYTO (RFC 5957) read; ok is
// false when the value holds no address.
func FirstAddress(v []byte) (name, mailbox, domain *string, ok bool) {
	list := parseAddressList(v, 1)
	if len(list) == 0 {
		return nil, nil, nil, false
	}
	return list[0].name, list[0].mailbox, list[0].domain, true
}
