// Reference outputs of face-api's own AgeGenderNet and FaceExpressionNet (@vladmandic/face-api
// 1.7.15 on tfjs 4.22's pure-JS CPU backend), for tests/test_faceapi_parity.py.
//
//   node faceapi_reference.cjs MODEL_DIR CROPS.f32 COUNT > outputs.json
//
// MODEL_DIR holds face-api's weights manifests and binaries; CROPS.f32 is COUNT face crops as
// float32 RGB 0..255, each 112 x 112 x 3 (HWC, as tfjs takes images). The weights are decoded by
// tfjs itself (tf.io.decodeWeights), so the converter's dequantisation is checked too.
'use strict';
const fs = require('fs');
const path = require('path');
const faceapi = require('@vladmandic/face-api/dist/face-api.node-wasm.js');

const tf = faceapi.tf;
const SIZE = 112;

function loadNet(net, modelDir, name) {
  const manifest = JSON.parse(fs.readFileSync(path.join(modelDir, `${name}-weights_manifest.json`), 'utf8'));
  const weightMap = {};
  for (const group of manifest) {
    const bytes = Buffer.concat(group.paths.map((p) => fs.readFileSync(path.join(modelDir, p))));
    const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
    Object.assign(weightMap, tf.io.decodeWeights(buffer, group.weights));
  }
  net.loadFromWeightMap(weightMap);
  return net;
}

async function main() {
  const [modelDir, cropsPath, countArg] = process.argv.slice(2);
  await tf.setBackend('cpu'); // the pure-JS kernels: no native or wasm code in the reference
  await tf.ready();
  const ageGender = loadNet(new faceapi.AgeGenderNet(), modelDir, 'age_gender_model');
  const expressions = loadNet(new faceapi.FaceExpressionNet(), modelDir, 'face_expression_model');
  const raw = fs.readFileSync(cropsPath);
  const crops = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
  const count = Number(countArg);
  const versions = { faceapi: faceapi.version, tfjs: tf.version['tfjs-core'] };
  const out = { backend: tf.getBackend(), versions, age: [], gender: [], expressions: [] };
  for (let i = 0; i < count; i += 1) {
    const pixels = crops.subarray(i * SIZE * SIZE * 3, (i + 1) * SIZE * SIZE * 3);
    const image = tf.tensor3d(pixels, [SIZE, SIZE, 3], 'float32');
    const ag = await ageGender.forward(image);
    out.age.push(Array.from(await ag.age.data())[0]);
    out.gender.push(Array.from(await ag.gender.data()));
    const probabilities = await expressions.forward(image);
    out.expressions.push(Array.from(await probabilities.data()));
    tf.dispose([image, ag.age, ag.gender, probabilities]);
  }
  process.stdout.write(JSON.stringify(out));
}

main().catch((error) => {
  process.stderr.write(`${error.stack || error}\n`);
  process.exit(1);
});
