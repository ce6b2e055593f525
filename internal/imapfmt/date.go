package imapfmt

import (
	"strings"
	"time"
)

// SentDate returns the time (seconds since the epoch, UTC) by which Dovecot 2.3 orders a message under the
// SORT key DATE (RFC 5256 section 3) when the value of its first Date field is v: message-date.c
// message_date_parse ("[weekday ","] dd month [yy]yy hh:mm[:ss] [zone]", comments and white space skipped, an
// unknown zone as +0000, a two-digit year as 1970-2069, an impossible date invalid), kept as Dovecot's cache
// keeps it (32 bits without sign, index-mail.c). ok is false when v does not parse or gives 0; Dovecot then
// sorts the message by its internal date.
func SentDate(v []byte) (t int64, ok bool) {
	p := &lexer{d: v}
	var tok []byte
	next := func() int {
		tok = tok[:0]
		ret := 0
		if p.more() {
			ret = p.parseAtom(&tok)
		}
		switch {
		case ret < 0:
			return -1
		case len(tok) > 0:
			return 1
		}
		return 0
	}
	digits := func(b []byte) (int, bool) {
		n := 0
		for _, c := range b {
			if c < '0' || c > '9' {
				return 0, false
			}
			n = n*10 + int(c-'0')
		}
		return n, true
	}
	p.skipLWSP()
	if next() <= 0 {
		return 0, false
	}
	if len(tok) == 3 { // weekday
		if p.cur() != ',' {
			return 0, false
		}
		p.pos++
		p.skipLWSP()
		if next() <= 0 {
			return 0, false
		}
	}
	if len(tok) < 1 || len(tok) > 2 {
		return 0, false
	}
	day, okd := digits(tok)
	if !okd {
		return 0, false
	}
	if next() <= 0 || len(tok) < 3 {
		return 0, false
	}
	mon := strings.Index("jan feb mar apr may jun jul aug sep oct nov dec ", strings.ToLower(string(tok[:3]))+" ")
	if mon < 0 || mon%4 != 0 {
		return 0, false
	}
	mon = mon/4 + 1
	if next() <= 0 || len(tok) != 2 && len(tok) != 4 {
		return 0, false
	}
	year, oky := digits(tok)
	if !oky {
		return 0, false
	}
	if len(tok) == 2 {
		year += 1900
		if year < 1970 {
			year += 100
		}
	} else if year < 1900 {
		return 0, false
	}
	if next() <= 0 || len(tok) < 1 || len(tok) > 2 {
		return 0, false
	}
	hour, okh := digits(tok)
	if !okh {
		return 0, false
	}
	isSep := func(c byte) bool { return c == ':' || c == '.' }
	if !isSep(p.cur()) {
		return 0, false
	}
	p.pos++
	p.skipLWSP()
	if next() < 0 || len(tok) != 2 {
		return 0, false
	}
	minute, okm := digits(tok)
	if !okm {
		return 0, false
	}
	sec := 0
	if p.more() && isSep(p.cur()) {
		p.pos++
		p.skipLWSP()
		if next() <= 0 || len(tok) != 2 {
			return 0, false
		}
		s, oks := digits(tok)
		if !oks {
			return 0, false
		}
		sec = s
	}
	zone := 0
	switch ret := next(); {
	case ret < 0:
		return 0, false
	case ret > 0:
		zone = dateZone(tok)
	}
	// utc_mktime: a leap second as :59, anything that would be normalized is invalid.
	if sec == 60 {
		sec = 59
	}
	tm := time.Date(year, time.Month(mon), day, hour, minute, sec, 0, time.UTC)
	if tm.Year() != year || int(tm.Month()) != mon || tm.Day() != day || tm.Hour() != hour || tm.Minute() != minute || tm.Second() != sec {
		return 0, false
	}
	if tm.Unix() == -1 {
		return 0, false
	}
	t = int64(uint32(tm.Unix() - int64(zone)*60))
	return t, t != 0
}

// dateZone is message-date.c parse_timezone: the offset in minutes of a zone, 0 for one it does not know.
func dateZone(s []byte) int {
	switch {
	case len(s) == 5 && (s[0] == '+' || s[0] == '-'):
		for _, c := range s[1:] {
			if c < '0' || c > '9' {
				return 0
			}
		}
		off := (int(s[1]-'0')*10+int(s[2]-'0'))*60 + int(s[3]-'0')*10 + int(s[4]-'0')
		if s[0] == '-' {
			return -off
		}
		return off
	case len(s) == 1:
		c := s[0]
		u := c
		if u >= 'a' && u <= 'z' {
			u -= 'a' - 'A'
		}
		switch {
		case u < 'J':
			return (int(c) - 'A' + 1) * 60
		case u == 'J':
			return 0
		case u <= 'M':
			return (int(c) - 'A') * 60
		case u < 'Z':
			return ('M' - int(c)) * 60
		}
		return 0
	case len(s) == 2 && (s[0]|0x20) == 'u' && (s[1]|0x20) == 't':
		return 0
	case len(s) == 3:
		if s[2] != 'T' {
			return 0
		}
		var off int
		switch s[0] | 0x20 {
		case 'e':
			off = -5 * 60
		case 'c':
			off = -6 * 60
		case 'm':
			off = -7 * 60
		case 'p':
			off = -8 * 60
		default:
			return 0
		}
		switch s[1] | 0x20 {
		case 'd':
			return off + 60
		case 's':
			return off
		}
	}
	return 0
}
