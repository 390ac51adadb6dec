// Drives the official, unmodified service SDK (azure-iothub Registry) for Tether's end-to-end
// tests: device and module create, get, update, list and delete, and the SDK's error types.
//
//   NODE_EXTRA_CA_CERTS=ca.pem HUB_CONNECTION_STRING=... node registry.js lifecycle <deviceId>
//   NODE_EXTRA_CA_CERTS=ca.pem HUB_CONNECTION_STRING=... node registry.js create <deviceId>
//
// Prints one JSON line: {"ok":true,...} or {"ok":false,"error":"<ErrorName>","message":"..."}.
// The SDK always dials port 443 of HostName and trusts only NODE_EXTRA_CA_CERTS.
'use strict';

const { Registry } = require('azure-iothub');

function fail(err, step) {
  console.log(JSON.stringify({ ok: false, step, error: err && err.constructor ? err.constructor.name : 'Error', message: String(err && err.message) }));
  process.exit(1);
}

// expectError runs fn and returns the name of the error it fails with.
async function expectError(fn) {
  try {
    await fn();
  } catch (err) {
    return err.constructor.name;
  }
  return 'no error';
}

async function lifecycle(registry, id) {
  const out = { ok: true, steps: [] };
  let step = 'create';
  try {
    const created = (await registry.create({ deviceId: id })).responseBody;
    out.created = created;
    out.steps.push(step);

    step = 'get';
    const got = (await registry.get(id)).responseBody;
    if (got.deviceId !== id || got.generationId !== created.generationId) throw new Error('get returned ' + JSON.stringify(got));
    out.got = got;
    out.steps.push(step);

    step = 'update';
    got.status = 'disabled';
    got.statusReason = 'maintenance';
    const updated = (await registry.update(got)).responseBody;
    if (updated.status !== 'disabled' || updated.etag === created.etag) throw new Error('update returned ' + JSON.stringify(updated));
    out.updated = updated;
    out.steps.push(step);

    step = 'list';
    const list = (await registry.list()).responseBody;
    out.listed = list.map((d) => d.deviceId);
    out.steps.push(step);

    step = 'duplicate';
    out.duplicateError = await expectError(() => registry.create({ deviceId: id }));
    out.steps.push(step);

    step = 'addModule';
    const mod = (await registry.addModule({ deviceId: id, moduleId: 'filter' })).responseBody;
    if (mod.moduleId !== 'filter' || !mod.authentication.symmetricKey.primaryKey) throw new Error('addModule returned ' + JSON.stringify(mod));
    out.steps.push(step);

    step = 'getModule';
    const gotMod = (await registry.getModule(id, 'filter')).responseBody;
    out.steps.push(step);

    step = 'updateModule';
    gotMod.managedBy = 'ops';
    const updMod = (await registry.updateModule(gotMod)).responseBody;
    if (updMod.managedBy !== 'ops') throw new Error('updateModule returned ' + JSON.stringify(updMod));
    out.steps.push(step);

    step = 'getModulesOnDevice';
    out.modules = (await registry.getModulesOnDevice(id)).responseBody.map((m) => m.moduleId);
    out.steps.push(step);

    step = 'removeModule';
    // (removeModule(moduleObject) has no promise form in this SDK version: use the ids.)
    await registry.removeModule(id, updMod.moduleId);
    out.steps.push(step);

    step = 'statistics';
    out.statistics = (await registry.getRegistryStatistics()).responseBody;
    out.steps.push(step);

    step = 'delete';
    await registry.delete(id);
    out.steps.push(step);

    step = 'getDeleted';
    out.getDeletedError = await expectError(() => registry.get(id));
    out.steps.push(step);
  } catch (err) {
    fail(err, step);
  }
  return out;
}

async function main() {
  const [cmd, id] = process.argv.slice(2);
  const registry = Registry.fromConnectionString(process.env.HUB_CONNECTION_STRING);
  let out;
  if (cmd === 'lifecycle') {
    out = await lifecycle(registry, id);
  } else if (cmd === 'create') {
    try {
      out = { ok: true, created: (await registry.create({ deviceId: id })).responseBody };
    } catch (err) {
      fail(err, 'create');
    }
  } else {
    throw new Error('unknown command ' + cmd);
  }
  console.log(JSON.stringify(out));
  process.exit(0); // the SDK's keep-alive agent would hold the process open
}

main().catch((err) => fail(err, 'main'));
