package message

import (
	"bytes"
	"fmt"
	"strings"
	"time"

	"github.com/tetherhub/tether/internal/binenc"
)

// View is an encoded message read in place: its byte slices alias the encoding, so decoding one
// copies nothing and, once a View is reused, allocates nothing. It is for readers that pass a
// record on without keeping it, such as the service API's event stream, which writes every
// record of the log as JSON; UnmarshalBinary makes a Message to keep. A View is valid as long as
// the data it decoded is unchanged.
type View struct {
	// The string fields of Message, as stored.
	MessageID                  []byte
	CorrelationID              []byte
	UserID                     []byte
	To                         []byte
	ContentType                []byte
	ContentEncoding            []byte
	ExpiryTime                 []byte
	CreationTime               []byte
	MessageSchema              []byte
	InterfaceID                []byte
	ComponentName              []byte
	OutputName                 []byte
	ConnectionDeviceID         []byte
	ConnectionModuleID         []byte
	ConnectionAuthGenerationID []byte
	ConnectionAuthMethod       []byte
	DataSchema                 []byte
	Source                     []byte

	EnqueuedTime time.Time

	// Properties are the application properties in stored order: AppendBinary writes them by
	// name, each once (PropertiesInOrder reports whether a record keeps to that).
	Properties []PropertyView

	Body []byte

	// Routed reports a stored routing decision (Message.Routing != nil); Routes and Endpoints
	// are its lists, nil when empty.
	Routed    bool
	Routes    [][]byte
	Endpoints [][]byte

	nanos        int64 // EnqueuedTime as stored
	propsInOrder bool
	propBuf      []PropertyView // backing of Properties, reused by the next Decode
	nameBuf      [][]byte       // backing of Routes and Endpoints, reused
}

// PropertyView is one application property of a View.
type PropertyView struct {
	Name, Value []byte
}

// stringFields lists the string fields in encoding order, as Message.stringFields does.
func (v *View) stringFields() [numStringFields]*[]byte {
	return [numStringFields]*[]byte{
		&v.MessageID, &v.CorrelationID, &v.UserID, &v.To, &v.ContentType, &v.ContentEncoding,
		&v.ExpiryTime, &v.CreationTime, &v.MessageSchema, &v.InterfaceID, &v.ComponentName,
		&v.OutputName, &v.ConnectionDeviceID, &v.ConnectionModuleID, &v.ConnectionAuthGenerationID,
		&v.ConnectionAuthMethod, &v.DataSchema, &v.Source,
	}
}

// numStringFields is the number of string fields of a Message.
const numStringFields = 18

// Decode reads an encoded message (what AppendBinary writes) into v, replacing what v held and
// reusing its memory (a copy of a View shares that memory: decode into one copy only). It
// accepts and rejects exactly what UnmarshalBinary does, with the same errors.
func (v *View) Decode(data []byte) error {
	var err error
	*v, err = decodeView(data, v.propBuf[:0], v.nameBuf[:0])
	return err
}

// decodeView decodes data into a View whose lists are appended to props and names. It returns
// the View rather than filling one through a pointer so that the caller's lists can stay on
// its stack (UnmarshalBinary).
func decodeView(data []byte, props []PropertyView, names [][]byte) (View, error) {
	v := View{propsInOrder: true, propBuf: props, nameBuf: names}
	d := binenc.NewDecoder(data, ErrCorrupt)
	version := d.Byte()
	if err := d.Err(); err != nil {
		return v, err
	}
	if version != codecVersion && version != codecVersionV1 {
		return v, fmt.Errorf("%w: unknown version %d", ErrCorrupt, version)
	}
	for _, f := range v.stringFields() {
		*f = d.Bytes()
	}
	if v.nanos = d.Varint(); v.nanos != 0 {
		v.EnqueuedTime = time.Unix(0, v.nanos).UTC()
	}
	n := d.Uvarint()
	if n > uint64(len(data)) { // each property takes at least two bytes
		return v, fmt.Errorf("%w: %d properties in %d bytes", ErrCorrupt, n, len(data))
	}
	for i := uint64(0); i < n && d.Err() == nil; i++ {
		p := PropertyView{Name: d.Bytes(), Value: d.Bytes()}
		if i > 0 && bytes.Compare(props[i-1].Name, p.Name) >= 0 {
			v.propsInOrder = false
		}
		props = append(props, p)
	}
	v.propBuf = props
	if len(props) > 0 {
		v.Properties = props
	}
	v.Body = d.Bytes()
	if version >= 2 && d.Byte() == 1 {
		v.Routed = true
		var nroutes, nendpoints int
		var err error
		if names, nroutes, err = readNames(&d, names, len(data)); err != nil {
			return v, err
		}
		if names, nendpoints, err = readNames(&d, names, len(data)); err != nil {
			return v, err
		}
		v.nameBuf = names
		if err := d.Err(); err != nil { // truncated: fewer names than counted
			return v, err
		}
		if nroutes > 0 {
			v.Routes = names[:nroutes:nroutes]
		}
		if nendpoints > 0 {
			v.Endpoints = names[nroutes:len(names):len(names)]
		}
	}
	return v, d.Finish()
}

// readNames appends a list of length-prefixed names (binenc.AppendStrings) and says how many.
func readNames(d *binenc.Decoder, names [][]byte, size int) ([][]byte, int, error) {
	n := d.Uvarint()
	if n > uint64(size) { // each name takes at least one byte
		return names, 0, fmt.Errorf("%w: a list of %d names in %d bytes", ErrCorrupt, n, size)
	}
	for i := uint64(0); i < n && d.Err() == nil; i++ {
		names = append(names, d.Bytes())
	}
	return names, int(n), nil
}

// PropertiesInOrder reports whether the properties are stored by strictly increasing name, as
// AppendBinary writes them; a record made otherwise may hold them in another order, or one name
// twice (UnmarshalBinary keeps the last).
func (v *View) PropertiesInOrder() bool { return v.propsInOrder }

// ViewSystemProperties are the system properties of a View, under their built-in endpoint names
// and in Message.SystemProperties' order, but for the enqueued time (a time, not bytes: see
// View.EnqueuedTime), for the encoders of events that read records in place.
var ViewSystemProperties = []struct {
	Name  string
	Value func(*View) []byte
}{
	{NameMessageID, func(v *View) []byte { return v.MessageID }},
	{NameCorrelationID, func(v *View) []byte { return v.CorrelationID }},
	{NameUserID, func(v *View) []byte { return v.UserID }},
	{NameTo, func(v *View) []byte { return v.To }},
	{NameContentType, func(v *View) []byte { return v.ContentType }},
	{NameContentEncoding, func(v *View) []byte { return v.ContentEncoding }},
	{NameExpiryTime, func(v *View) []byte { return v.ExpiryTime }},
	{NameCreationTime, func(v *View) []byte { return v.CreationTime }},
	{NameMessageSchema, func(v *View) []byte { return v.MessageSchema }},
	{NameInterfaceID, func(v *View) []byte { return v.InterfaceID }},
	{NameComponentName, func(v *View) []byte { return v.ComponentName }},
	{NameOutputName, func(v *View) []byte { return v.OutputName }},
	{NameDataSchema, func(v *View) []byte { return v.DataSchema }},
	{NameConnectionDeviceID, func(v *View) []byte { return v.ConnectionDeviceID }},
	{NameConnectionModuleID, func(v *View) []byte { return v.ConnectionModuleID }},
	{NameAuthGenerationID, func(v *View) []byte { return v.ConnectionAuthGenerationID }},
	{NameAuthMethod, func(v *View) []byte { return v.ConnectionAuthMethod }},
	{NameMessageSource, func(v *View) []byte { return v.Source }},
}

// ToEndpoint reports whether the message goes to the named endpoint, as Message.ToEndpoint.
func (v *View) ToEndpoint(name string) bool {
	if !v.Routed {
		return name == BuiltInEndpoint
	}
	for _, e := range v.Endpoints {
		if string(e) == name {
			return true
		}
	}
	return false
}

// message copies v into m: the strings into one allocation they share, the body into another.
func (v *View) message(m *Message) {
	*m = Message{}
	fields := v.stringFields()
	total := 0
	for _, f := range fields {
		total += len(*f)
	}
	for _, p := range v.Properties {
		total += len(p.Name) + len(p.Value)
	}
	for _, s := range v.Routes {
		total += len(s)
	}
	for _, s := range v.Endpoints {
		total += len(s)
	}
	var sb strings.Builder
	sb.Grow(total)
	for _, f := range fields {
		sb.Write(*f)
	}
	for _, p := range v.Properties {
		sb.Write(p.Name)
		sb.Write(p.Value)
	}
	for _, s := range v.Routes {
		sb.Write(s)
	}
	for _, s := range v.Endpoints {
		sb.Write(s)
	}
	all := sb.String()
	next := func(b []byte) string {
		if len(b) == 0 {
			return ""
		}
		s := all[:len(b)]
		all = all[len(b):]
		return s
	}
	for i, f := range m.stringFields() {
		*f = next(*fields[i])
	}
	if v.nanos != 0 {
		// Made again rather than copied, so that nothing of v flows into m but its bytes,
		// which keeps UnmarshalBinary's lists on its stack.
		m.EnqueuedTime = time.Unix(0, v.nanos).UTC()
	}
	if len(v.Properties) > 0 {
		m.Properties = make(map[string]string, len(v.Properties))
		for _, p := range v.Properties {
			k := next(p.Name)
			m.Properties[k] = next(p.Value)
		}
	}
	if len(v.Body) > 0 {
		m.Body = append([]byte(nil), v.Body...)
	}
	if v.Routed {
		m.Routing = newRouting(len(v.Routes), len(v.Endpoints))
		for i, s := range v.Routes {
			m.Routing.Routes[i] = next(s)
		}
		for i, s := range v.Endpoints {
			m.Routing.Endpoints[i] = next(s)
		}
	}
}

// newRouting allocates a Routing with lists of the given lengths (nil when 0), in one
// allocation for the usual few names.
func newRouting(nroutes, nendpoints int) *Routing {
	type routingWithNames struct {
		r     Routing
		names [4]string
	}
	var r *Routing
	var names []string
	if n := nroutes + nendpoints; n <= 4 {
		rn := new(routingWithNames)
		r, names = &rn.r, rn.names[:n]
	} else {
		r, names = new(Routing), make([]string, n)
	}
	if nroutes > 0 {
		r.Routes = names[:nroutes:nroutes]
	}
	if nendpoints > 0 {
		r.Endpoints = names[nroutes:len(names):len(names)]
	}
	return r
}
