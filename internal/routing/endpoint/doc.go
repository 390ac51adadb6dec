// Package endpoint delivers routed device-to-cloud messages to IoT Hub-style custom endpoints:
// webhooks, files (IoT Hub's storage endpoint), NATS JetStream and PostgreSQL.
//
// # Delivery
//
// The router decides at ingestion where a message goes and stores the decision in the record
// (message.Routing). For every endpoint and every partition of the telemetry log, a deliverer
// reads the log from a durable cursor, keeps the messages with ToEndpoint(name), enriches a
// private copy (Config.Enrich), drops those over 256 KB after enrichment (as IoT Hub does), and
// hands batches to the endpoint's Sink. The cursor is saved in the metadata database (bucket
// "routing.endpoint.cursors") only after the sink confirmed, so delivery is at-least-once: a
// crash redelivers at most the batch in flight. A device's messages are in one partition and a
// partition is delivered sequentially, so each device's messages arrive in order (a redelivery
// repeats a suffix, it never reorders). Endpoints read the log independently: an endpoint that
// is down holds back nobody, ingestion included, and catches up from its cursor when it returns.
// A cursor that only moved over other endpoints' records is saved at most once a second.
//
// A new endpoint starts at the end of the log; one whose spec changed restarts from its cursor;
// a removed one loses its cursors. The router should Apply a new endpoint before routes target
// it: messages routed to it before its cursor exists are not delivered.
//
// If retention removes records before an endpoint delivered them (ErrBeforeRetained), the loss
// is logged at error level, counted (EndpointHealth.Lost) and delivery goes on from the first
// retained record.
//
// # Retries and health
//
// A failed delivery is retried with exponential backoff: retry.initialInterval (1 s) doubling up
// to retry.maxInterval (1 min), ±10% jitter. Health, per endpoint the worst of its partitions,
// uses IoT Hub's states:
//
//	unknown    nothing delivered yet and no failure
//	healthy    the last attempt succeeded
//	degraded   failing for less than Config.UnhealthyAfter (1 min)
//	unhealthy  failing for UnhealthyAfter up to Config.DeadAfter (15 min)
//	dead       failing for DeadAfter or longer
//
// Unlike IoT Hub, which stops delivering to a dead endpoint, Tether retries a dead endpoint every
// Config.DeadRetryInterval (5 min) and delivers its backlog when it answers again: nothing is
// dropped while the records are retained. One success makes it healthy again.
//
// # Webhook
//
// POST to the URL; any 2xx is success, anything else (redirects included) a failure. With
// secret (or secretFile) every request carries X-Tether-Signature: sha256=<lower-case hex
// HMAC-SHA256 of the exact body, keyed with the secret>; VerifySignature checks it. TLS trusts
// caFile when set, else the system roots. Every request also has X-Tether-Endpoint and
// X-Tether-Hub.
//
// One message per request (the default): the body is the message body; Content-Type is the
// message's content type (application/octet-stream when it has none); system properties are
// headers under the Event Hubs names of spec 2.8, written as-is in lower case
// (iothub-connection-device-id, iothub-connection-auth-method,
// iothub-connection-auth-generation-id, iothub-connection-module-id, iothub-enqueuedtime as
// 2019-05-10T06:06:32.7220000Z, iothub-message-source, message-id, correlation-id, user-id,
// dt-dataschema, dt-subject, ...), except that the content type and encoding use Event Grid's
// iothub-content-type and iothub-content-encoding (HTTP's Content-Encoding means compression).
// Application properties are headers iothub-app-<name>, as on IoT Hub's HTTPS API; if any
// property cannot be a header (a name that is not an HTTP token, a value that is not printable
// ASCII) the header x-tether-properties carries all of them as an ASCII JSON object.
// X-Tether-Partition, X-Tether-Sequence-Number and X-Tether-Delivery-Id
// (endpoint/partition/sequence, stable across redeliveries) let receivers deduplicate.
//
// Batches (batch: true): the body is a JSON array of Event Grid events as IoT Hub publishes
// them (eventType Microsoft.Devices.DeviceTelemetry, subject devices/<id>, data.body JSON when
// application/json in utf-8 else base64, data.properties, data.systemProperties with the header
// names above, id = the delivery id), Content-Type application/json, aeg-event-type:
// Notification, at most maxBatchSize messages and about 1 MB.
//
// # Storage
//
// Files under directory named by fileNameFormat (all of {iothub} {partition} {YYYY} {MM} {DD}
// {HH} {mm}, UTC time of the file's first message) plus .json or .avro; a name already taken
// gets -1, -2... before the extension. A partition's file is written when batchFrequencyInSeconds
// passed since its first message, or when the next message would make it larger than
// maxChunkSizeInBytes (for Avro the uncompressed record bytes count), or when the endpoint stops.
// No empty files are written. A file is written to directory/.tether-tmp, fsynced, hard-linked
// to its name (atomically, never replacing a file), the directories fsynced, and only then the
// cursor moves. JSON: one object per line, {"EnqueuedTimeUtc","Properties","SystemProperties"
// (storage names: messageId, connectionDeviceId, connectionDeviceGenerationId,
// connectionAuthMethod, contentType, contentEncoding, enqueuedTime, ...),"Body"} with Body the
// JSON itself for application/json utf-8 messages, else base64. Avro: an object container file
// (codec null, or deflate for AvroDeflate) with schema AvroSchema, Body as bytes. The writer is
// behind ChunkStore for object storage later.
//
// # NATS
//
// JetStream publish with acks (pipelined up to maxBatchSize, then all acks awaited) to subject
// (tokens {iothub} {endpoint} {deviceId} {moduleId} {partition}; '.', '*', '>' and whitespace in
// values become '_'). Headers as for webhooks, plus Nats-Msg-Id = endpoint/partition/sequence, so
// JetStream discards redeliveries within the stream's duplicate window (2 min by default). With
// stream set, the stream is created if missing. Only the acknowledged prefix of a batch counts as
// delivered. Caveat: if the server rejects one message of a pipelined batch but accepts a later
// one, the retry lands the rejected one after it; maxBatchSize 1 makes publishing strictly
// sequential.
//
// # PostgreSQL
//
// Rows (partition, sequence, enqueued_time, device_id, module_id, system_properties jsonb,
// properties jsonb, body bytea, body_json jsonb) inserted per batch in one statement with ON
// CONFLICT (partition, sequence) DO NOTHING, so redeliveries are ignored. The table is created if
// missing. body_json is set for application/json utf-8 bodies. (partition, sequence) identify a
// record of one hub's log: point one table at one hub.
package endpoint
