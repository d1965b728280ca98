"""serving: Ray Serve applications, one per live variant (registry alias) of each model.

- `deployment.py` — the replica (`@serve.batch`, warm-up, hot swap via `reconfigure`)
- `servable.py` — one loaded model version scoring request columns (pure, no Ray)
- `deployer.py` — registry aliases → Serve applications (pure plan + Serve adapter)
- `client.py` — `ServingClient`: what the router calls, through Serve handles
- `errors.py` — `ServingUnavailable`, `ModelNotServed`, `InvalidFeatures`
- `loopback.py` — keeps replica listeners on 127.0.0.1
- `config.py` — `ServingSettings` (`DRIFTLOOP_SERVING_*`: variants, batching, replicas,
  autoscaling per variant)
- `state.py` — `$DRIFTLOOP_HOME/serving.json` (Ray address, what is deployed)
- `app.py` — wiring: Ray, Serve, `models.events`, `serving.json`, and health
  (`services.common.health`: `/healthz`, `/readyz`, `/v1/variants`)
"""

import os as _os

# Before anything here imports ray: keeps a local Ray (and every listener) on loopback.
import services.common.ray_runtime  # noqa: F401

# Read once when ray / ray.serve are imported, so set here, before any module of this
# package imports them; children (a local Ray's processes) inherit them.
SERVING_RAY_ENV = {
    # Measured (notes/ray.md): replicas run user code on their own loop and handles route
    # on the caller's loop, each saving a thread hop per request.
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    # Serving's cluster is joined by other processes (router, tests): they need the
    # cluster's token, which a local head keeps in ~/.ray/auth_token (or RAY_AUTH_TOKEN).
    "RAY_AUTH_MODE": "token",
}
for _name, _value in SERVING_RAY_ENV.items():
    _os.environ.setdefault(_name, _value)
