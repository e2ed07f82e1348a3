// Reference outputs of MoveNet MultiPose Lightning as tfjs itself runs the graph model (tfjs 4.22's
// pure-JS CPU backend), for tests/test_movenet_parity.py.
//
//   node movenet_reference.cjs MODEL.json FRAMES.u8 COUNT SIZE > outputs.json
//
// MODEL.json is the tfjs graph model (its weights binary beside it, as the manifest names it);
// FRAMES.u8 is COUNT RGB images of SIZE x SIZE x 3 bytes each (HWC), the exact input tensors the
// engine gives its ONNX conversion. tf.loadGraphModel reads the model through a file IO handler
// (tfjs without tfjs-node has no file:// loader), so tfjs decodes the weights and runs every op of
// the graph itself.
'use strict';
const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs');

function fileHandler(modelPath) {
  return {
    async load() {
      const model = JSON.parse(fs.readFileSync(modelPath, 'utf8'));
      const weightSpecs = [];
      const buffers = [];
      for (const group of model.weightsManifest) {
        weightSpecs.push(...group.weights);
        for (const p of group.paths) buffers.push(fs.readFileSync(path.join(path.dirname(modelPath), p)));
      }
      const bytes = Buffer.concat(buffers);
      return {
        modelTopology: model.modelTopology,
        format: model.format,
        generatedBy: model.generatedBy,
        convertedBy: model.convertedBy,
        signature: model.signature,
        weightSpecs,
        weightData: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength),
      };
    },
  };
}

async function main() {
  const [modelPath, framesPath, countArg, sizeArg] = process.argv.slice(2);
  await tf.setBackend('cpu'); // the pure-JS kernels: no native or wasm code in the reference
  await tf.ready();
  const model = await tf.loadGraphModel(fileHandler(modelPath));
  const raw = fs.readFileSync(framesPath);
  const count = Number(countArg);
  const size = Number(sizeArg);
  const frameBytes = size * size * 3;
  const out = { backend: tf.getBackend(), versions: { tfjs: tf.version['tfjs-core'] }, outputs: [] };
  for (let i = 0; i < count; i += 1) {
    const pixels = Int32Array.from(raw.subarray(i * frameBytes, (i + 1) * frameBytes));
    const input = tf.tensor4d(pixels, [1, size, size, 3], 'int32');
    const result = model.execute(input);
    out.outputs.push(result.arraySync()[0]);
    tf.dispose([input, result]);
  }
  process.stdout.write(JSON.stringify(out));
}

main().catch((error) => {
  process.stderr.write(`${error.stack || error}\n`);
  process.exit(1);
});
