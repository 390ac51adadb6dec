// The smallest Tether device: an unmodified Azure IoT SDK app that sends one telemetry message.
//
//   NODE_EXTRA_CA_CERTS=<data-dir>/tls/ca.pem DEVICE_CONNECTION_STRING='HostName=...' node send.js
'use strict';

const { Client, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');

async function main() {
  const client = Client.fromConnectionString(process.env.DEVICE_CONNECTION_STRING, Mqtt);
  await client.open();
  const msg = new Message(JSON.stringify({ temperature: 21.5, humidity: 40 }));
  msg.messageId = 'reading-1';
  msg.contentType = 'application/json';
  msg.contentEncoding = 'utf-8';
  msg.properties.add('temperatureAlert', 'false');
  await client.sendEvent(msg);
  console.log('sent');
  await client.close();
}

main().catch((err) => { console.error(err); process.exit(1); });
