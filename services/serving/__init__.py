"""serving: Ray Serve applications, one per live variant (registry alias) of each model.

- `deployment.py` — the replica (`@serve.batch`, warm-up, hot swap via `reconfigure`)
- `servable.py` — one loaded model version scoring request columns (pure, no Ray)
- `deployer.py` — registry aliases → Serve applications (pure plan + Serve adapter)
- `client.py` — `ServingClient`: what the router calls, through Serve handles
- `errors.py` — `ServingUnavailable`, `ModelNotServed`, `InvalidFeatures`
- `loopback.py` — keeps replica listeners on 127.0.0.1
- `app.py` — wiring: Ray, Serve, `models.events`, health, `serving.json`
"""

# Before anything here imports ray: keeps a local Ray (and every listener) on loopback.
import services.common.ray_runtime  # noqa: F401
