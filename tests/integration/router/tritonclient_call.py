"""Run by the tritonclient venv (not the project's): calls the router with an unchanged
tritonclient and prints the scores and variants as JSON. argv: target, model, rows JSON."""

import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient

target, model, rows_json, numeric_json = sys.argv[1:5]
rows = json.loads(rows_json)
numeric = set(json.loads(numeric_json))
client = grpcclient.InferenceServerClient(url=target)
assert client.is_server_live() and client.is_model_ready(model)
inputs = []
for name in rows[0]:
    if name in numeric:
        data = np.asarray([[r[name]] for r in rows], dtype=np.float32)
        tensor = grpcclient.InferInput(name, list(data.shape), "FP32")
    else:
        data = np.asarray([r[name].encode() for r in rows], dtype=np.object_)
        tensor = grpcclient.InferInput(name, [len(rows)], "BYTES")
    tensor.set_data_from_numpy(data)
    inputs.append(tensor)
result = client.infer(model, inputs, request_id="triton-1")
print(
    json.dumps(
        {
            "scores": result.as_numpy("score").tolist(),
            "variants": [v.decode() for v in result.as_numpy("variant").tolist()],
        }
    )
)
