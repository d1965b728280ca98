"""`python -m services.serving`: the serving service."""

from services.serving.app import main

raise SystemExit(main())
