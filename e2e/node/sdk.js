// Drives the official, unmodified Azure IoT device SDK for Tether's end-to-end tests.
//
//   DEVICE_CONNECTION_STRING=... TRANSPORT=mqtt node sdk.js send '<json array of messages>'
//   DEVICE_CONNECTION_STRING=... TRANSPORT=http node sdk.js sendBatch '<json array of messages>'
//   DEVICE_CONNECTION_STRING=... node sdk.js open
//
// Prints one JSON line: {"ok":true,...} or {"ok":false,"error":"<ErrorName>","message":"..."}.
// The hub's CA is trusted through NODE_EXTRA_CA_CERTS, exactly as a user would.
'use strict';

const { Client, Message } = require('azure-iot-device');

function transport(name) {
  switch (name || 'mqtt') {
    case 'mqtt': return require('azure-iot-device-mqtt').Mqtt;
    case 'mqttws': return require('azure-iot-device-mqtt').MqttWs;
    case 'http': return require('azure-iot-device-http').Http;
    default: throw new Error('unknown transport ' + name);
  }
}

function toMessage(m) {
  const msg = new Message(m.bodyBase64 ? Buffer.from(m.bodyBase64, 'base64') : m.body);
  if (m.messageId) msg.messageId = m.messageId;
  if (m.correlationId) msg.correlationId = m.correlationId;
  if (m.userId) msg.userId = m.userId;
  if (m.contentType) msg.contentType = m.contentType;
  if (m.contentEncoding) msg.contentEncoding = m.contentEncoding;
  if (m.to) msg.to = m.to;
  if (m.ack) msg.ack = m.ack;
  if (m.interfaceId) msg.interfaceId = m.interfaceId;
  if (m.expiryTimeUtc) msg.expiryTimeUtc = new Date(m.expiryTimeUtc);
  for (const [k, v] of Object.entries(m.properties || {})) msg.properties.add(k, v);
  return msg;
}

function fail(err) {
  const inner = err && err.transportError ? err.transportError.message : undefined;
  console.log(JSON.stringify({ ok: false, error: err && err.constructor ? err.constructor.name : 'Error', message: String(err && err.message), inner }));
  process.exit(1);
}

async function main() {
  const [cmd, arg] = process.argv.slice(2);
  const client = Client.fromConnectionString(process.env.DEVICE_CONNECTION_STRING, transport(process.env.TRANSPORT));
  client.on('error', (err) => fail(err));
  await client.open();
  const out = { ok: true };
  if (cmd === 'send') {
    const messages = JSON.parse(arg);
    out.sent = 0;
    for (const m of messages) {
      await client.sendEvent(toMessage(m));
      out.sent++;
    }
  } else if (cmd === 'sendBatch') {
    const messages = JSON.parse(arg).map(toMessage);
    await client.sendEventBatch(messages);
    out.sent = messages.length;
  } else if (cmd !== 'open') {
    throw new Error('unknown command ' + cmd);
  }
  await client.close();
  console.log(JSON.stringify(out));
}

main().catch(fail);
