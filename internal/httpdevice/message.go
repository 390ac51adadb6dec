package httpdevice

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/tetherhub/tether/internal/message"
)

// appPrefix marks an application property in a header name or batch property key.
const appPrefix = "iothub-app-"

// propAck is iothub-ack: a header on HTTPS, an application property on every other protocol.
const propAck = "iothub-ack"

// systemField maps a system property's HTTPS header name (spec table 2.4), in lower case, to the
// message field it sets.
func systemField(m *message.Message, lowerName string) *string {
	switch lowerName {
	case "iothub-messageid":
		return &m.MessageID
	case "iothub-correlationid":
		return &m.CorrelationID
	case "iothub-userid":
		return &m.UserID
	case "iothub-to":
		return &m.To
	case "iothub-expiry":
		// The Node SDK sends Date.toString(); carried as sent (see message.Message.ExpiryTime).
		return &m.ExpiryTime
	case "iothub-contenttype":
		return &m.ContentType
	case "iothub-contentencoding":
		return &m.ContentEncoding
	case "iothub-creationtimeutc":
		return &m.CreationTime
	case "iothub-messageschema":
		return &m.MessageSchema
	case "iothub-interface-id":
		return &m.InterfaceID
	case "dt-subject":
		return &m.ComponentName
	}
	return nil
}

// messageFromHeaders builds a single event (spec 4.2): system properties from their iothub-*
// headers, application properties from iothub-app-{name} (names in lower case, see the package
// comment), the body as sent.
func messageFromHeaders(h http.Header, body []byte) *message.Message {
	m := &message.Message{Body: body}
	for key, values := range h {
		if len(values) == 0 {
			continue
		}
		lower := strings.ToLower(key)
		if !strings.HasPrefix(lower, "iothub-") && lower != "dt-subject" {
			continue
		}
		if name, ok := strings.CutPrefix(lower, appPrefix); ok {
			m.SetProperty(name, values[0])
			continue
		}
		if f := systemField(m, lower); f != nil {
			*f = values[0]
			continue
		}
		if lower == propAck {
			m.SetProperty(propAck, values[0])
		}
	}
	return m
}

// batchItem is one element of a batch (spec 4.3).
type batchItem struct {
	Body          *string           `json:"body"`
	Base64Encoded *bool             `json:"base64Encoded"`
	Properties    map[string]string `json:"properties"`
}

// parseBatch decodes a batch: a JSON array of {"body", "base64Encoded" (default true),
// "properties"}. Property keys iothub-app-{name} are application properties {name} (case kept);
// the header names of system properties set them; iothub-connection-* keys are dropped (only the
// hub stamps those); any other key is an application property as written.
func parseBatch(data []byte) ([]*message.Message, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	var items []batchItem
	if err := dec.Decode(&items); err != nil {
		return nil, fmt.Errorf("the batch is not a JSON array of messages: %w", err)
	}
	if dec.More() {
		return nil, errors.New("the batch has data after its JSON array")
	}
	if items == nil {
		return nil, errors.New("the batch is not a JSON array of messages")
	}
	if len(items) == 0 {
		return nil, errors.New("the batch has no messages")
	}
	msgs := make([]*message.Message, len(items))
	for i, it := range items {
		m := &message.Message{}
		if it.Body != nil {
			if it.Base64Encoded == nil || *it.Base64Encoded {
				b, err := base64.StdEncoding.DecodeString(*it.Body)
				if err != nil {
					return nil, fmt.Errorf("message %d: the body is not base64 (set \"base64Encoded\": false for a text body): %w", i, err)
				}
				m.Body = b
			} else {
				m.Body = []byte(*it.Body)
			}
		}
		for key, value := range it.Properties {
			lower := strings.ToLower(key)
			switch {
			case strings.HasPrefix(lower, "iothub-connection-"):
				// Only the hub stamps the connection identity.
			case strings.HasPrefix(lower, appPrefix):
				m.SetProperty(key[len(appPrefix):], value)
			case systemField(m, lower) != nil:
				*systemField(m, lower) = value
			default:
				m.SetProperty(key, value)
			}
		}
		msgs[i] = m
	}
	return msgs, nil
}
