"""`python -m services.monitor`: the monitor service."""

from services.monitor.app import main

raise SystemExit(main())
