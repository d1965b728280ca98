"""`python -m services.router`: the gRPC front door (settings: DRIFTLOOP_ROUTER_*)."""

from services.router.app import main

raise SystemExit(main())
