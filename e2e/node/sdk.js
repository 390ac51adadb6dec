// Drives the official, unmodified Azure IoT device SDK for Tether's end-to-end tests.
//
//   DEVICE_CONNECTION_STRING=... TRANSPORT=mqtt node sdk.js send '<json array of messages>'
//   DEVICE_CONNECTION_STRING=... TRANSPORT=http node sdk.js sendBatch '<json array of messages>'
//   DEVICE_CONNECTION_STRING=... node sdk.js open
//   DEVICE_CONNECTION_STRING=... TRANSPORT=http node sdk.js receive '{"count":2,"settle":["abandon","complete"],"timeoutMs":20000}'
//
// receive listens for cloud-to-device messages until count arrived (or timeoutMs passed: then
// ok is false with error "Timeout" and what arrived so far) and settles each with the next entry
// of settle (the last one repeats; default complete). Over MQTT the SDK's PUBACK completes and
// complete() is a no-op; reject/abandon exist only over HTTP. It prints "received": messageId,
// correlationId, userId, to, expiryTimeUtc, contentType, contentEncoding, lockToken, properties
// (an object) and data (UTF-8).
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

function describe(msg) {
  const properties = {};
  for (const p of (msg.properties && msg.properties.propertyList) || []) properties[p.key] = p.value;
  return {
    messageId: msg.messageId, correlationId: msg.correlationId, userId: msg.userId, to: msg.to,
    expiryTimeUtc: msg.expiryTimeUtc ? String(msg.expiryTimeUtc) : undefined,
    contentType: msg.contentType, contentEncoding: msg.contentEncoding, lockToken: msg.lockToken,
    properties, data: msg.data ? Buffer.from(msg.data).toString('utf8') : '',
  };
}

function receive(client, opts) {
  const count = opts.count || 1;
  const settle = opts.settle && opts.settle.length ? opts.settle : ['complete'];
  const received = [];
  return new Promise((resolve, reject) => {
    let done = false;
    const finish = (err) => {
      if (done) return;
      done = true;
      client.removeListener('message', onMessage);
      clearTimeout(timer);
      if (err) {
        err.received = received;
        reject(err);
      } else {
        resolve(received);
      }
    };
    const timer = setTimeout(() => {
      const err = new Error('received ' + received.length + ' of ' + count + ' messages');
      err.name = 'Timeout';
      finish(err);
    }, opts.timeoutMs || 30000);
    const onMessage = (msg) => {
      if (done) return;
      const how = settle[Math.min(received.length, settle.length - 1)];
      received.push(describe(msg));
      client[how](msg).then(() => {
        if (received.length >= count) finish();
      }, finish);
    };
    client.on('message', onMessage);
  });
}

function fail(err) {
  const inner = err && err.transportError ? err.transportError.message : undefined;
  const error = err && err.name === 'Timeout' ? 'Timeout' : err && err.constructor ? err.constructor.name : 'Error';
  console.log(JSON.stringify({ ok: false, error, message: String(err && err.message), inner, received: err && err.received }));
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
  } else if (cmd === 'receive') {
    out.received = await receive(client, JSON.parse(arg || '{}'));
  } else if (cmd !== 'open') {
    throw new Error('unknown command ' + cmd);
  }
  await client.close();
  console.log(JSON.stringify(out));
}

main().catch(fail);
