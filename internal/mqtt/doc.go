// Package mqtt is Tether's device endpoint for MQTT 3.1.1: a small server loop of its own on
// the packet codec of github.com/mochi-mqtt/server/v2/packets, speaking the subset of MQTT that
// Azure IoT Hub's devices use (CONNECT, PUBLISH QoS 0/1, PUBACK both ways, SUBSCRIBE,
// UNSUBSCRIBE, PINGREQ, DISCONNECT) with IoT Hub's semantics rather than a general broker's.
//
// The package only translates: who may connect, what a valid message is and where it is stored
// are the Hub's decisions. A connection is one goroutine reading packets, which an idle
// connection gives up after Options.ParkAfter (Linux: its socket then waits in an epoll set of
// the server's, and the first byte, hang-up, deadline or close starts a new one); a QoS 1 PUBLISH is
// submitted to the hub at once and acknowledged by a second goroutine, started only while
// acknowledgements are pending, which waits for each message to become durable in arrival
// order. So PUBACKs leave in arrival order, reading continues while earlier messages are being
// stored (pipelining), and reading stops when Options.MaxInflight are pending (backpressure).
//
// Decisions where the spec (shared/spec/iothub-messaging.md) is unconfirmed:
//
//   - CONNECT: the client id (deviceId or deviceId/moduleId) must name the same identity as the
//     username, otherwise CONNACK 0x05; an unparsable or missing username is also 0x05 (0x04 and
//     0x02 make the C SDK stop retrying). Protocol levels other than 4 get CONNACK 0x01.
//     Session present is always 0: no session state is kept yet.
//   - Keep-alive 0 means the cap (Options.KeepAliveCap, 1767 s by default).
//   - Property bags: '+' is a literal plus, never a space (the SDKs encode space as %20; the
//     Python SDK explicitly avoids quote_plus). A name or value with a malformed percent escape
//     is kept raw instead of failing the message. A token without '=' is a property with an
//     empty value; a token with an empty name is dropped. "$.cdid" and "$.cmid" are dropped
//     (the hub stamps the connection identity); "$.diagid", "$.diagctx" and unknown "$."
//     names become application properties under their decoded names, so nothing a device sent
//     is silently lost.
//   - Topic names may contain '+' and '#': IoT Hub device ids may, and the C SDK writes raw
//     property values, so the MQTT wildcard rule for topic names is not enforced.
//   - SUBSCRIBE: devices/{id}/messages/devicebound/# and devices/+/messages/devicebound/# are
//     granted min(requested QoS, 1); every other filter (twin, methods, another device's, module
//     and Edge topics) gets 0x80 and the connection stays open, as the SDKs treat 0x80 as
//     success and a disconnect would start their reconnect loop. Modules get 0x80 for
//     devicebound too: IoT Hub has no classic C2D for modules.
//   - Will: submitted (with iothub-MessageType=Will) when the connection ends without
//     DISCONNECT because of the device or the network: read error, keep-alive timeout, protocol
//     violation, refused message. It is not submitted when the server ends the connection for
//     its own reasons — takeover by a newer connection of the same identity (the device is
//     evidently alive), credential expiry (the SDK reconnects with a fresh token), Shutdown.
//   - Credential expiry and Shutdown stop reading, PUBACK what becomes durable, then close;
//     takeover and protocol violations close at once.
package mqtt
