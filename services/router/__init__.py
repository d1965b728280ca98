"""The router: the gRPC front door apps call (issue 13).

hashing (sticky bucket) -> assignment (variant by weight, holdout) -> validation and
features (request -> frame, online fill) -> coalescing (per-variant Serve calls) ->
routing (live + fallback + shadow) -> prediction_log / spool / log_sink (predictions.log)
; grpc_api, open_inference, auth, errors are the gRPC edge; app wires it.
"""
