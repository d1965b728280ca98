"""`python -m services.trainer`: the trainer service."""

from services.trainer.app import main

raise SystemExit(main())
